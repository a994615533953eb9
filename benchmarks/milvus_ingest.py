"""Ingest rate of the Milvus sink against plain pymilvus, on Milvus Lite (or a server given with ``--uri``).

    .venv/bin/python benchmarks/milvus_ingest.py                   # 20,000 x 1024, ~1-2 min on 2 cores
    .venv/bin/python benchmarks/milvus_ingest.py --rows 200000     # full size

The same precomputed, normalised float32 vectors (``--dim``, default 1024) with a string id and a ``title`` go
into a fresh collection each time (same schema, same ``--index`` with COSINE):

- sink: ``MilvusSink.start`` (outside the clock), then ``write()`` of shard-sized Arrow tables (``--shard-rows``)
  and ``commit()`` (flush, index, load, count, close);
- plain: ``MilvusClient.insert(list of dicts)`` with numpy row vectors (faster than ``.tolist()`` rows, measured)
  at each ``--batch-sizes``, then ``flush`` and close. The row dicts are built before the clock starts, so plain
  pymilvus is timed on its calls alone; the sink's time includes its Arrow → protobuf conversion.

Milvus Lite builds segment indexes in a background thread after a flush; closing the database waits for it.
Both sides are timed up to that close, so both include the same index build ("end to end"); the write phase
alone (``write()`` calls / ``insert()`` calls) is reported too. The default index is FLAT (nothing to build):
with ``--index AUTOINDEX`` (HNSW through faiss) the identical build takes ~20 s per 20,000 x 1024 trial on 2
cores, which says nothing about ingest and makes the default run take minutes. Every trial gets its own
database directory so no background work of one trial runs during the next. Each configuration runs
``--rounds`` times; the best round counts. The ratio is sink / best plain (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from pymilvus import DataType

from embedder.config import MilvusSinkConfig
from embedder.config.sinks import is_lite_uri
from embedder.sinks.base import SinkStartInfo
from embedder.sinks.milvus import MilvusSink, connect, disconnect

COLLECTION = "bench"


def make_data(rows: int, dim: int, seed: int = 7) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [f"doc-{i:09d}" for i in range(rows)], vectors, [f"Document number {i}" for i in range(rows)]


def shard_tables(ids: list[str], vectors: np.ndarray, titles: list[str], shard_rows: int) -> list[pa.Table]:
    dim = vectors.shape[1]
    return [pa.table({"id": ids[lo:lo + shard_rows],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[lo:lo + shard_rows].ravel()), dim),
                      "title": titles[lo:lo + shard_rows]})
            for lo in range(0, len(ids), shard_rows)]


class Trial:
    """A fresh place for one measurement: its own Lite directory, or a server collection dropped afterwards."""

    def __init__(self, base: str | None, workdir: str, number: int) -> None:
        self.uri = base or os.path.join(workdir, f"trial-{number}.db")

    def drop(self) -> None:
        if is_lite_uri(self.uri):
            shutil.rmtree(self.uri, ignore_errors=True)
            return
        client = connect(self.uri)
        try:
            if client.has_collection(COLLECTION):
                client.drop_collection(COLLECTION)
        finally:
            disconnect(client, self.uri)


def run_sink(uri: str, tables: list[pa.Table], dim: int, index: str, batch_bytes: int) -> dict[str, float]:
    schema = tables[0].select(["id", "title"]).schema
    info = SinkStartInfo(model="bench", task=None, dimensions=dim, fingerprint="bench", passthrough_schema=schema,
                         id_type=pa.string())
    sink = MilvusSink(MilvusSinkConfig(uri=uri, collection=COLLECTION, index_type=index, batch_bytes=batch_bytes))
    sink.start(info)
    started = time.perf_counter()
    for number, table in enumerate(tables):
        sink.write(f"shard-{number}", table)
    written = time.perf_counter()
    receipt = sink.commit([f"shard-{n}" for n in range(len(tables))])
    done = time.perf_counter()
    assert receipt.rows == sum(t.num_rows for t in tables), receipt
    return {"write_s": written - started, "total_s": done - started}


def run_plain(uri: str, batches: list[list[dict[str, Any]]], dim: int, index_type: str) -> dict[str, float]:
    client = connect(uri)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("title", DataType.VARCHAR, max_length=65_535, nullable=True)
    client.create_collection(COLLECTION, schema=schema)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type=index_type, metric_type="COSINE")
    client.create_index(COLLECTION, index, sync=False)
    started = time.perf_counter()
    for batch in batches:
        client.insert(COLLECTION, batch)
    written = time.perf_counter()
    client.flush(COLLECTION)
    disconnect(client, uri)  # Milvus Lite: waits for the background index build, as the sink's commit does
    done = time.perf_counter()
    return {"write_s": written - started, "total_s": done - started}


def best_of(rounds: int, trial: Callable[[int], dict[str, float]]) -> dict[str, float]:
    results = [trial(r) for r in range(rounds)]
    return {key: min(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--shard-rows", type=int, default=5_000, help="rows per sink write (the job's shard size)")
    parser.add_argument("--batch-sizes", default="500,1000,2000,5000", help="plain insert batch sizes to try")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration; the best counts")
    parser.add_argument("--index", default="FLAT", choices=["FLAT", "AUTOINDEX", "HNSW"], help="vector index")
    parser.add_argument("--sink-batch-bytes", type=int, default=MilvusSinkConfig.batch_bytes,
                        help="the sink's upsert request bound (default: the job default, 16 MiB)")
    parser.add_argument("--uri", default=None, help="a Milvus server (http://host:19530) instead of Milvus Lite")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()

    ids, vectors, titles = make_data(args.rows, args.dim)
    tables = shard_tables(ids, vectors, titles, args.shard_rows)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    workdir = tempfile.mkdtemp(prefix="milvus-ingest-")
    counter = iter(range(1_000_000))

    def measure(action: Callable[[str], dict[str, float]]) -> dict[str, float]:
        def one(_: int) -> dict[str, float]:
            trial = Trial(args.uri, workdir, next(counter))
            try:
                return action(trial.uri)
            finally:
                trial.drop()
        return best_of(args.rounds, one)

    try:
        print(f"{args.rows:,} rows x {args.dim} dims, index {args.index}, {args.rounds} rounds each, "
              f"{'Milvus Lite ' + __import__('milvus_lite').__version__ if args.uri is None else args.uri}")
        plain: dict[int, dict[str, float]] = {}
        for size in sizes:
            batches = [[{"id": ids[i], "vector": vectors[i], "title": titles[i]}
                        for i in range(lo, min(lo + size, args.rows))] for lo in range(0, args.rows, size)]
            plain[size] = measure(lambda uri, b=batches: run_plain(uri, b, args.dim, args.index))
            print(f"  plain insert, batch {size:>6,}: {args.rows / plain[size]['write_s']:>8,.0f} rows/s writing, "
                  f"{args.rows / plain[size]['total_s']:>8,.0f} rows/s end to end")
            del batches
        sink = measure(lambda uri: run_sink(uri, tables, args.dim, args.index, args.sink_batch_bytes))
        print(f"  MilvusSink, shards of {args.shard_rows:,}: {args.rows / sink['write_s']:>8,.0f} rows/s writing, "
              f"{args.rows / sink['total_s']:>8,.0f} rows/s end to end")
        best_write = min(plain, key=lambda s: plain[s]["write_s"])
        best_total = min(plain, key=lambda s: plain[s]["total_s"])
        result = {
            "rows": args.rows, "dim": args.dim, "rounds": args.rounds, "index": args.index,
            "sink_batch_bytes": args.sink_batch_bytes,
            "sink_rows_per_s": args.rows / sink["write_s"], "sink_end_to_end_rows_per_s": args.rows / sink["total_s"],
            "plain_best_batch": best_write, "plain_rows_per_s": args.rows / plain[best_write]["write_s"],
            "plain_best_batch_end_to_end": best_total,
            "plain_end_to_end_rows_per_s": args.rows / plain[best_total]["total_s"],
        }
        result["ratio"] = result["sink_rows_per_s"] / result["plain_rows_per_s"]
        result["ratio_end_to_end"] = result["sink_end_to_end_rows_per_s"] / result["plain_end_to_end_rows_per_s"]
        print(f"ratio sink / best plain: {result['ratio']:.2f} writing (plain batch {best_write:,}), "
              f"{result['ratio_end_to_end']:.2f} end to end (plain batch {best_total:,}); target >= 0.9")
        if args.json:
            print(json.dumps(result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
