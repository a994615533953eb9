"""Helpers of the fault-matrix and secret-hygiene tests (on top of ``jobtools``): the exact-output check for a
Milvus collection (read in a subprocess: Milvus Lite allows one process per database), and a search of files for
secrets. Their jobs are written by ``embedder.testing.fault_job``; a 2-node cluster is ``embedder.testing.RayCluster``
with ``add_node``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from jobtools import MODEL, PYTHON

from embedder.mock_jina.vectors import embed_texts
from embedder.testing import COLLECTION

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

