"""Helpers of the job system tests: corpora in several formats, job files, the CLI in a subprocess, Ray clusters
started with ``ray start`` and torn down by process group, and the exact-output check.

Every Ray instance a test uses lives in a subprocess (the CLI's own local cluster, or a ``ray start`` head), so
nothing of Ray stays inside pytest. Each gets its own short temporary directory (``RAY_TMPDIR`` / ``--temp-dir``):
parallel sessions on the same machine never find each other's clusters. Ray is told to use the loopback address
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), so every connection stays on 127.0.0.1.

A ``ray start`` cluster is stopped by killing its process group (``ray start`` runs in a new session, and every
process of the cluster inherits its group), not with ``ray stop``, which would kill every Ray process of the user
on the machine, other people's clusters included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
MODEL = "jina-embeddings-v3"
CLI_TIMEOUT_S = 300.0
"""No single CLI run of these tests may take longer; a hung run fails its test instead of hanging the suite."""


# --- small utilities ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_tmpdir(prefix: str) -> str:
    """A short directory under /tmp: Ray puts Unix sockets below its temp dir, and their paths must stay short."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


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


# --- job files ---------------------------------------------------------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string takes JSON's escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_job(path: str | Path, *, source: Mapping[str, Any], sink: Mapping[str, Any],
              **sections: Mapping[str, Any] | None) -> str:
    """A job file with ``[source]``, ``[sink]`` and any other section given (``embedding=...``, ``limits=...``)."""
    tables = {"source": source, **{k: v for k, v in sections.items() if v is not None}, "sink": sink}
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    Path(path).write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def small_job(path: str | Path, source: str | Path, output: str | Path, *, dimensions: int = 64,
              shard_rows: int = 500, passthrough: Sequence[str] = ("title",), workers: int = 2,
              checkpoint: str | Path | None = None, limits: Mapping[str, Any] | None = None,
              embedding: Mapping[str, Any] | None = None, source_extra: Mapping[str, Any] | None = None,
              workers_extra: Mapping[str, Any] | None = None) -> str:
    """The usual test job: the source → Parquet in ``output``; generous limits unless ``limits`` are given."""
    return write_job(
        path,
        source={"path": str(source), "id_column": "id", "text_column": "text", "passthrough": list(passthrough),
                "shard_rows": shard_rows, **(source_extra or {})},
        embedding={"model": MODEL, "dimensions": dimensions, "max_retries": 10, **(embedding or {})},
        limits=dict(limits or {"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 8}),
        workers={"count": workers, "cpus_per_worker": 0.25, **(workers_extra or {})},
        checkpoint={"path": str(checkpoint)} if checkpoint else None,
        progress={"interval_s": 1.0},
        sink={"kind": "parquet", "path": str(output)},
    )


# --- running the CLI ---------------------------------------------------------------------------------------

def cli_env(api_base: str, api_key: str, *, ray_tmpdir: str | None = None, ray_address: str | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an ``embedder run`` subprocess: the key and the local server, a private Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA", "AWS_"))}
    env.update(JINA_API_KEY=api_key, JINA_API_BASE=api_base, PYTHONUNBUFFERED="1",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    if ray_tmpdir:
        env["RAY_TMPDIR"] = ray_tmpdir
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    env.update(extra or {})
    return env


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


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def kill_process_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the group, SIGKILL whatever is left after ``grace_s``; only this group, which a test started."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if wait_group_gone(pgid, wait):
            return


def processes_using(directory: str) -> list[int]:
    """Processes with their working directory or an open file below ``directory`` (Ray's worker processes start
    sessions of their own, so a process group does not hold them; the temp dir they write logs to does)."""
    prefix = os.path.realpath(directory) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            links = [os.readlink(f"/proc/{entry}/cwd")]
            links += [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(link.startswith(prefix) for link in links):
            found.append(int(entry))
    return found


def kill_processes_using(directory: str, grace_s: float = 5.0) -> None:
    """What a test's Ray left running in its private temp dir: SIGTERM, then SIGKILL after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_using(directory)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if not pids:
            return
        deadline = time.monotonic() + grace_s
        while processes_using(directory) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextlib.contextmanager
def private_ray_tmpdir() -> Iterator[str]:
    """A short temp dir for a run's local Ray (``RAY_TMPDIR``); whatever still uses it afterwards is stopped."""
    path = short_tmpdir("rt")
    try:
        yield path
    finally:
        kill_processes_using(path)
        shutil.rmtree(path, ignore_errors=True)


# --- a Ray cluster started with `ray start` ----------------------------------------------------------------

class RayHead:
    """``ray start --head`` on loopback with its own temp dir and token; a context manager.

    Token auth stays on (Ray 2.60's default): the cluster gets a fresh token in ``RAY_AUTH_TOKEN`` with
    ``RAY_AUTH_MODE=token``, and every client (the CLI, ``ray job submit``, helper scripts) is given the same
    two variables through :meth:`client_env`. Extra ``env`` (for example the API key) goes into the environment
    of ``ray start``, which the raylet, the workers and submitted job drivers inherit.
    """

    def __init__(self, *, dashboard: bool = False, env: Mapping[str, str] | None = None, num_cpus: int = 2) -> None:
        self.dashboard = dashboard
        self.extra_env = dict(env or {})
        self.num_cpus = num_cpus
        self.port = free_port()
        self.dashboard_port = free_port()
        self.temp_dir = short_tmpdir("rt")
        self.token = secrets.token_hex(32)
        self.pgid: int | None = None
        self.start_output = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                   RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        # `python` in a job's entrypoint is looked up on the raylet's PATH: make it this interpreter
        env["PATH"] = os.pathsep.join([os.path.dirname(PYTHON), env.get("PATH", "")])
        return env

    def start(self) -> RayHead:
        env = self.client_env({k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA"))})
        env.update(self.extra_env)
        command = [RAY, "start", "--head", f"--port={self.port}", f"--num-cpus={self.num_cpus}",
                   f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                   f"--include-dashboard={'true' if self.dashboard else 'false'}"]
        # Ports Ray would otherwise take at fixed numbers (10001, 52365), where another cluster on this machine
        # may already be: the job agent would fail ("No available agent to submit job").
        command += [f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}"]
        if self.dashboard:
            command += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, cwd=self.temp_dir)
        self.pgid = proc.pid
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("ray start did not finish within 120 s") from None
        self.start_output = out.decode(errors="replace")
        if proc.returncode != 0:
            self.stop()
            raise AssertionError(f"ray start failed ({proc.returncode}):\n{self.start_output[-4000:]}")
        return self

    def stop(self) -> None:
        if self.pgid is not None:
            kill_process_group(self.pgid, grace_s=3.0)
            self.pgid = None
        kill_processes_using(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def python(self, code: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a fresh Python connected to nothing yet: it calls ``ray.init(address=sys.argv[1])``."""
        env = self.client_env({k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA"))})
        return subprocess.run([PYTHON, "-c", code, self.address, *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


def shard_rows_by_id(checkpoint: str, filesystem: pafs.FileSystem | None = None) -> dict[str, int]:
    """Rows of each finished shard, from its done marker."""
    return {m["shard_id"]: int(m["row_count"]) for m in ledger(checkpoint, filesystem).done_markers()}


def done_ids(checkpoint: str) -> set[str]:
    done = Path(checkpoint) / "done"
    if not done.is_dir():
        return set()
    return {p.name[:-5] for p in done.iterdir() if p.name.endswith(".json") and not p.name.startswith((".", "_"))}


def wait_server_idle(server: Any, timeout: float = 30.0) -> None:
    """Until the local server has no request in flight (what a killed run left running)."""
    wait_for(lambda: server.stats()["in_flight"] == 0, timeout=timeout, what="the server's in-flight requests")


def assert_no_secret(text: str, secret: str, where: str) -> None:
    assert secret not in text, f"the API key appears in {where}"


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    started = time.monotonic()
    yield lambda: time.monotonic() - started
