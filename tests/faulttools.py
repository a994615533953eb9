"""Helpers of the fault-matrix, secret-hygiene and bad-config tests (on top of ``jobtools``).

Job files with a Parquet and/or a Milvus Lite sink, the exact-output check for a Milvus collection (read in a
subprocess: Milvus Lite allows one process per database), and a second ``ray start`` node for a 2-node cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from jobtools import (
    MODEL,
    PYTHON,
    RayHead,
    _toml_value,
    free_port,
    kill_process_group,
    short_tmpdir,
)

from embedder.mock_jina.vectors import embed_texts

COLLECTION = "docs"


def fault_job(path: str | Path, source: str | Path, out: str | Path, *, sinks: Sequence[str] = ("parquet",),
              dimensions: int = 64, shard_rows: int = 500, workers: int = 2, passthrough: Sequence[str] = ("title",),
              embedding: Mapping[str, Any] | None = None, limits: Mapping[str, Any] | None = None,
              workers_extra: Mapping[str, Any] | None = None, source_extra: Mapping[str, Any] | None = None,
              extra: str = "") -> str:
    """A job: ``source`` → ``<out>/parquet`` and/or the Milvus Lite db ``<out>/milvus.db``; the ledger in
    ``<out>/_checkpoint``. ``extra`` is appended verbatim (TOML)."""
    out = Path(out)
    sections: dict[str, Mapping[str, Any]] = {
        "source": {"path": str(source), "id_column": "id", "text_column": "text", "passthrough": list(passthrough),
                   "shard_rows": shard_rows, **(source_extra or {})},
        "embedding": {"model": MODEL, "dimensions": dimensions, "max_retries": 10, **(embedding or {})},
        "limits": dict(limits or {"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 8}),
        "workers": {"count": workers, "cpus_per_worker": 0.25, **(workers_extra or {})},
        "checkpoint": {"path": str(out / "_checkpoint")},
        "progress": {"interval_s": 1.0},
    }
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                lines.append(f"{key} = {{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    for kind in sinks:
        lines.append("[[sinks]]")
        if kind == "parquet":
            lines += ['kind = "parquet"', f"path = {_toml_value(str(out / 'parquet'))}"]
        elif kind == "milvus":
            lines += ['kind = "milvus"', f"uri = {_toml_value(str(out / 'milvus.db'))}",
                      f'collection = "{COLLECTION}"']
        else:
            raise ValueError(kind)
        lines.append("")
    Path(path).write_text("\n".join(lines) + extra, encoding="utf-8")
    return str(path)


MILVUS_DUMP = r"""
import json, sys
import numpy as np
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
name = sys.argv[3]
client.load_collection(name)
count = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
it = client.query_iterator(name, batch_size=4000, output_fields=["id", "vector"])
ids, vectors = [], []
while True:
    batch = it.next()
    if not batch:
        break
    for row in batch:
        ids.append(row["id"])
        vectors.append(row["vector"])
it.close()
np.savez(sys.argv[2], ids=np.array(ids, dtype=object), vectors=np.array(vectors, "float32"), count=np.array(count))
"""


def milvus_dump(db: str | Path, collection: str = COLLECTION) -> tuple[list[str], np.ndarray, int]:
    """Every id (with repeats, if any), their vectors and ``count(*)`` of the collection, read in a subprocess."""
    dump = Path(db).parent / f"dump-{os.getpid()}.npz"
    proc = subprocess.run([PYTHON, "-c", MILVUS_DUMP, str(db), str(dump), collection], capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = np.load(dump, allow_pickle=True)
    dump.unlink()
    return [str(i) for i in data["ids"].tolist()], data["vectors"], int(data["count"])


def assert_exact_milvus(db: str | Path, expected: pa.Table, *, dimensions: int, dead: Iterable[str] = ()) -> None:
    """count(*) equals the expected rows, every id once, each vector equal to the API's vector for its text."""
    ids, vectors, count = milvus_dump(db)
    dead = set(dead)
    want = [row for row in expected.select(["id", "text"]).to_pylist() if row["id"] not in dead]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} ids are in the collection more than once"
    assert count == len(want), f"count(*) is {count}, expected {len(want)}"
    assert set(ids) == {row["id"] for row in want}
    position = {row_id: index for index, row_id in enumerate(ids)}
    got = vectors[[position[row["id"]] for row in want]]
    assert got.shape[1] == dimensions
    reference = embed_texts(MODEL, [row["text"] for row in want], dimensions)
    # Milvus stores float32: the same bits come back
    wrong = np.flatnonzero(~np.all(got == reference, axis=1))
    assert wrong.size == 0, f"{wrong.size} vectors differ, e.g. id {want[int(wrong[0])]['id']}"


JOIN_ON_LOOPBACK = (
    # `ray start --address` refuses to join a cluster when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (jobtools' switch
    # that keeps Ray on 127.0.0.1), and with it on, Ray rewrites 127.0.0.1 to the machine's outside address. So
    # this one `ray start` allows joining and keeps every address on loopback; the processes it starts inherit
    # the "=0" environment and stay on loopback by themselves.
    "import sys; import ray._private.ray_constants as c; import ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.node_ip_address_from_perspective = lambda *a, **k: '127.0.0.1'; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


class RayNode:
    """A second ``ray start --address HEAD`` on this machine, in its own process group and temp dir."""

    def __init__(self, head: RayHead, *, num_cpus: int = 2, resources: Mapping[str, float] | None = None) -> None:
        self.head = head
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.temp_dir = short_tmpdir("rn")
        self.pgid: int | None = None

    def start(self) -> RayNode:
        env = self.head.client_env({k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA"))})
        env.update(self.head.extra_env)
        command = [PYTHON, "-c", JOIN_ON_LOOPBACK, "start", f"--address={self.head.address}",
                   f"--num-cpus={self.num_cpus}",
                   f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                   f"--resources={json.dumps(self.resources)}", f"--metrics-export-port={free_port()}",
                   f"--dashboard-agent-listen-port={free_port()}"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, cwd=self.temp_dir)
        self.pgid = proc.pid
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("ray start (worker node) did not finish within 120 s") from None
        if proc.returncode != 0:
            self.stop()
            raise AssertionError(f"ray start (worker node) failed:\n{out.decode(errors='replace')[-4000:]}")
        return self

    def kill(self) -> None:
        """The node is lost: SIGKILL its whole process group at once."""
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)

    def stop(self) -> None:
        if self.pgid is not None:
            kill_process_group(self.pgid, grace_s=3.0)
            self.pgid = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def grep_tree(root: str | Path, needles: Sequence[str]) -> list[str]:
    """Files under ``root`` (recursively) that contain any of ``needles`` (bytes comparison)."""
    hits = []
    encoded = [needle.encode() for needle in needles]
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            if any(needle in data for needle in encoded):
                hits.append(path)
    return hits


__all__ = ["COLLECTION", "RayNode", "assert_exact_milvus", "fault_job", "grep_tree", "milvus_dump", "sys"]
