"""Helpers of the job system tests: corpora in several formats, the CLI in a subprocess (run to the end, or
interrupted mid-run), killing an actor of a ``ray start`` cluster, and the exact-output check.

Job files, the Ray cluster harness and the process-group helpers are in :mod:`embedder.testing` (the benchmarks
use them too). Every Ray instance a test uses lives in a subprocess (the CLI's own local Ray, or a
:class:`~embedder.testing.RayCluster`), so nothing of Ray stays inside pytest. Each gets its own short temporary
directory (``RAY_TMPDIR`` / ``--temp-dir``): parallel sessions on the same machine never find each other's
clusters. Ray is told to use the loopback address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), so every connection
stays on 127.0.0.1. Whatever a test starts is stopped by killing its process group, never with ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder.cli.sample_corpus import generate_rows
from embedder.ledger import Ledger
from embedder.mock_jina.vectors import embed_texts
from embedder.testing import MODEL, RayCluster, kill_process_group, wait_group_gone

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLI_TIMEOUT_S = 300.0
"""No single CLI run of these tests may take longer; a hung run fails its test instead of hanging the suite."""


# --- small utilities ---------------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- corpora -----------------------------------------------------------------------------------------------

def corpus_rows(count: int, *, start: int = 0, words_per_doc: int = 40) -> pa.Table:
    """``count`` rows ``id`` (``doc-<n>``), ``title``, ``topic``, ``text``."""
    return generate_rows(count, start=start, words_per_doc=words_per_doc)


def write_parquet(path: str | Path, table: pa.Table, *, row_group_rows: int = 1000,
                  compression: str = "snappy") -> str:
    pq.write_table(table, str(path), row_group_size=row_group_rows, compression=compression)
    return str(path)


def write_jsonl(path: str | Path, table: pa.Table) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in table.to_pylist():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def write_csv(path: str | Path, table: pa.Table) -> str:
    pcsv.write_csv(table, str(path))
    return str(path)


WRITERS = {"parquet": write_parquet, "jsonl": write_jsonl, "csv": write_csv}


def write_mixed_corpus(directory: str | Path, table: pa.Table, layout: Sequence[tuple[str, int]]) -> list[str]:
    """Split ``table`` over files in ``directory``: ``layout`` is ``(format, rows)`` per file, in order."""
    os.makedirs(directory, exist_ok=True)
    assert sum(n for _, n in layout) == table.num_rows, "layout must cover every row"
    paths, start = [], 0
    for number, (fmt, rows) in enumerate(layout):
        path = Path(directory) / f"data-{number:02d}.{fmt}"
        paths.append(WRITERS[fmt](path, table.slice(start, rows)))
        start += rows
    return paths


# --- running the CLI ---------------------------------------------------------------------------------------

@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"exit {self.returncode} after {self.seconds:.1f}s\n--- stdout ---\n{self.stdout[-4000:]}\n"
                f"--- stderr ---\n{self.stderr[-6000:]}")


def embedder_command(job: str | Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "embedder", "run", str(job), *args]


def run_cli(job: str | Path, *args: str, env: Mapping[str, str], cwd: str | Path | None = None,
            timeout: float = CLI_TIMEOUT_S) -> Result:
    """``embedder run JOB ARGS`` to completion, in its own process group (killed whole on timeout)."""
    proc = start_cli(job, *args, env=env, cwd=cwd)
    return proc.wait(timeout)


class CliProcess:
    """A running ``embedder run``; output goes to files so a full pipe never blocks it."""

    def __init__(self, command: list[str], env: Mapping[str, str], cwd: str | Path | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="embedder-cli-"))
        self.started = time.monotonic()
        with open(self.dir / "stdout", "wb") as out, open(self.dir / "stderr", "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=dict(env),
                                         cwd=str(cwd) if cwd else None, start_new_session=True)
        self.pid = self.proc.pid

    def text(self, name: str) -> str:
        return (self.dir / name).read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = CLI_TIMEOUT_S, *, reap_grace_s: float = 15.0) -> Result:
        """Wait for the CLI to exit, then for its process group (its local Ray) to go; kill what is left after
        ``reap_grace_s`` (a SIGKILLed driver leaves Ray's dashboard and runtime-env agents behind for a minute)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            lines = [line for line in self.text("stderr").splitlines() if not line.startswith("[embedder]")]
            raise AssertionError(f"embedder run did not finish within {timeout:.0f}s (its output is kept in "
                                 f"{self.dir}); last lines other than progress:\n"
                                 + "\n".join(lines[-60:])) from None
        finally:
            self.reap_group(reap_grace_s)
        result = Result(code, self.text("stdout"), self.text("stderr"), time.monotonic() - self.started)
        shutil.rmtree(self.dir, ignore_errors=True)
        return result

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the CLI process alone (not its group)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill_group(self) -> None:
        kill_process_group(self.pid)

    def reap_group(self, grace_s: float = 15.0) -> None:
        """Wait for what the run started (its local Ray) to go away by itself; kill what is left after that."""
        if not wait_group_gone(self.pid, grace_s):
            kill_process_group(self.pid)


def start_cli(job: str | Path, *args: str, env: Mapping[str, str], cwd: str | Path | None = None) -> CliProcess:
    return CliProcess(embedder_command(job, *args), env, cwd)


def interrupt_mid_run(job: str | Path, checkpoint: str, interrupt: Callable[[CliProcess], Any], *,
                      env: Mapping[str, str], what: str, markers: int = 1, total_shards: int | None = None,
                      cwd: str | Path | None = None, wait_s: float = 120.0, timeout: float = CLI_TIMEOUT_S,
                      reap_grace_s: float = 15.0) -> Result:
    """Start ``embedder run JOB``; once ``checkpoint`` holds ``markers`` done markers, check the run is still
    going and call ``interrupt(run)`` (``what`` names it in the messages: "the kill", "the revocation", ...); then,
    if ``total_shards`` is given, check the run had not finished all its shards by then. The markers are waited
    for up to ``wait_s`` seconds. Returns the run's result, waited for up to ``timeout`` seconds (it is waited
    for, and its process group reaped, whatever fails)."""
    run = start_cli(job, env=env, cwd=cwd)
    try:
        wait_for(lambda: len(done_ids(checkpoint)) >= markers or not run.running(), timeout=wait_s,
                 what=f"{markers} done marker(s)")
        assert run.running(), f"the run finished before {what}: make it slower"
        interrupt(run)
        if total_shards is not None:
            assert len(done_ids(checkpoint)) < total_shards, f"{what} came after the run had finished its shards"
    finally:
        result = run.wait(timeout, reap_grace_s=reap_grace_s)
    return result


KILL_ACTOR = r"""
import json, os, signal, sys, time
import ray
from ray.util.state import list_actors

# ray.kill() needs an ActorHandle, and only the job's driver holds handles to its (unnamed) actors; another
# driver cannot build one from an actor id. So the actor is killed the way a crash kills it: SIGKILL to the
# actor's process, found through the state API. Ray then restarts the actor (max_restarts=-1) and fails the
# calls it was running with ActorDiedError, exactly as after ray.kill(handle, no_restart=False).
address, class_suffix = sys.argv[1], sys.argv[2]
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while True:
    alive = [a for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000, detail=True)
             if a.class_name.endswith(class_suffix)]
    if alive or time.monotonic() > deadline:
        break
    time.sleep(0.2)
if not alive:
    print(json.dumps({"killed": None}))
    sys.exit(3)
victim = alive[0]
os.kill(victim.pid, signal.SIGKILL)
deadline = time.monotonic() + 60
restarts = 0
while time.monotonic() < deadline:
    state = list_actors(address=address, filters=[("actor_id", "=", victim.actor_id)], detail=True)
    if state and (state[0].num_restarts or 0) >= 1:
        restarts = state[0].num_restarts
        break
    time.sleep(0.2)
print(json.dumps({"killed": victim.actor_id, "class_name": victim.class_name, "pid": victim.pid,
                  "restarts": restarts, "alive": len(alive)}))
"""


def kill_actor(cluster: RayCluster, class_suffix: str) -> dict[str, Any]:
    """SIGKILL the process of an alive actor whose class name ends in ``class_suffix`` (through the state API:
    the cluster needs its dashboard) and wait until Ray has restarted it; returns what was killed."""
    killer = cluster.python(KILL_ACTOR, class_suffix)
    assert killer.returncode == 0, killer.stdout + killer.stderr
    killed = json.loads(killer.stdout.strip().splitlines()[-1])
    assert killed["killed"] and killed["restarts"] >= 1, killed
    return killed


# --- reading and checking the output -----------------------------------------------------------------------

def output_fs(output: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, output.split("://", 1)[1] if "://" in output else output
    return pafs.LocalFileSystem(), os.path.abspath(output)


def read_manifest(output: str, filesystem: pafs.FileSystem | None = None) -> dict:
    fs, root = output_fs(output, filesystem)
    with fs.open_input_stream(f"{root}/_manifest.json") as handle:
        return json.loads(handle.read())


def part_files(output: str, filesystem: pafs.FileSystem | None = None) -> list[str]:
    fs, root = output_fs(output, filesystem)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    return sorted(info.base_name for info in infos
                  if info.type == pafs.FileType.File and info.base_name.startswith("part-"))


def read_output(output: str, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Every part the manifest lists, concatenated (and the manifest must list exactly the part files there)."""
    fs, root = output_fs(output, filesystem)
    manifest = read_manifest(output, filesystem)
    listed = sorted(part["path"] for part in manifest["parts"])
    assert listed == part_files(output, filesystem), "the manifest must list exactly the part files of the output"
    tables = [pq.read_table(f"{root}/{name}", filesystem=fs) for name in listed]
    table = pa.concat_tables(tables) if tables else pa.table({})
    assert manifest["rows"] == table.num_rows == sum(p["rows"] for p in manifest["parts"])
    return table


def vectors_of(table: pa.Table) -> np.ndarray:
    column = table.column("vector")
    dim = column.type.list_size
    flat = pa.concat_arrays(column.chunks).flatten() if column.num_chunks else pa.array([], pa.float32())
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def assert_exact_output(output: str, expected: pa.Table, *, dimensions: int, passthrough: Sequence[str] = ("title",),
                        dead: Iterable[str] = (), filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """The invariant: each id of ``expected`` (columns ``id``, ``text`` and the passthrough ones) is in the output
    exactly once, with the vector the API returns for its text and its passthrough values, except the ids in
    ``dead``, which must not be in the output at all. Returns the output table."""
    table = read_output(output, filesystem)
    dead = set(dead)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} ids are in the output more than once"
    want = [row for row in expected.select(["id", "text", *passthrough]).to_pylist() if row["id"] not in dead]
    want_ids = {row["id"] for row in want}
    missing, extra = want_ids - set(ids), set(ids) - want_ids
    assert not missing and not extra, (f"{len(missing)} ids missing (e.g. {sorted(missing)[:3]}), "
                                       f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})")
    assert table.column("vector").type.list_size == dimensions
    position = {row_id: index for index, row_id in enumerate(ids)}
    order = [position[row["id"]] for row in want]
    got = vectors_of(table.take(pa.array(order, pa.int64())))
    reference = embed_texts(MODEL, [row["text"] for row in want], dimensions)
    wrong = np.flatnonzero(~np.all(got == reference, axis=1))
    assert wrong.size == 0, (f"{wrong.size} vectors differ from the API's vector for their text, e.g. id "
                             f"{want[int(wrong[0])]['id']}")
    for index in (0, len(want) // 2, len(want) - 1) if want else ():  # literally, one text at a time
        assert np.array_equal(got[index], embed_texts(MODEL, [want[index]["text"]], dimensions)[0])
    for name in passthrough:
        values = table.column(name).take(pa.array(order, pa.int64())).to_pylist()
        assert values == [row[name] for row in want], f"passthrough column {name!r} was not copied faithfully"
    return table


def ledger(path: str, filesystem: pafs.FileSystem | None = None) -> Ledger:
    if filesystem is not None:
        return Ledger.load(path.split("://", 1)[1] if "://" in path else path, filesystem=filesystem)
    return Ledger.load(path)


def shard_rows_done(checkpoint: str, shard_ids: Iterable[str]) -> int:
    """Rows of the shards ``shard_ids``, from their done markers."""
    rows = {marker.stats.shard_id: marker.row_count for marker in ledger(checkpoint).done_markers()}
    return sum(rows[shard_id] for shard_id in shard_ids)


def done_ids(checkpoint: str) -> set[str]:
    done = Path(checkpoint) / "done"
    if not done.is_dir():
        return set()
    return {p.name[:-5] for p in done.iterdir() if p.name.endswith(".json") and not p.name.startswith((".", "_"))}


def wait_server_idle(server: Any, timeout: float = 30.0) -> None:
    """Until the local server has no request in flight (what a killed run left running)."""
    wait_for(lambda: server.stats()["in_flight"] == 0, timeout=timeout, what="the server's in-flight requests")
