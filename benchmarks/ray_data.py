"""Embedding as a Ray Data step, two ways, side by side in one run against the same rate-limited server.

    .venv/bin/python benchmarks/ray_data.py                      # 1,600 rows, 4 a request: 400 requests at 300 RPM
    .venv/bin/python benchmarks/ray_data.py --rows 64 --rpm 6000 # smoke size

1. **JinaEmbed**: ``map_batches(embedder.ray_data.JinaEmbed, concurrency=4)``: every actor asks one cluster-wide
   limiter (a named actor) before each request; the project's client (base64, retries, splitting).
2. **paced httpx UDF**: what Ray Data users write today: a callable class with its own httpx client, one request per
   ``--batch`` rows, each actor paced to the key's limit on its own (one request every 60/RPM seconds, at most
   ``--max-concurrency`` in flight across its calls), 429s retried after Retry-After. Four actors "at 300 RPM"
   together send up to 1,200 a minute.

Both read the same Parquet corpus and write Parquet, with ``concurrency=4`` actors and ``--map-batch`` rows per
batch, against the local stand-in server with the same limits (``--rpm``, ``--tpm``, ``--max-concurrency``,
``--latency-ms``), reset in between. Each pipeline runs in its own process with its own local Ray. Printed for
each: wall time (process start to exit), requests the server saw, 429s, 429s per 100 requests, rows written.
More requests than the minute allows (the default) make the limit bite: a sliding window lets a fresh key spend a
minute's requests at once, and the rest wait for it to slide.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

from embedder.testing import MODEL, private_ray_tmpdir


# --- 2. what users write today ------------------------------------------------------------------------------------
class PacedHttpxUDF:
    """A ``map_batches`` callable class: one request per ``batch`` rows, this actor paced at ``rpm`` on its own."""

    def __init__(self, api_base: str, dimensions: int, rpm: int, batch: int, max_concurrency: int) -> None:
        import httpx

        self.url, self.dimensions, self.batch = f"{api_base}/embeddings", dimensions, batch
        self.interval = 60.0 / rpm
        self.max_concurrency = max_concurrency
        self.next_at = time.monotonic()
        self.lock = threading.Lock()  # the actor's own pacer, shared by its request threads
        self.client = httpx.Client(timeout=120, trust_env=False,
                                   headers={"Authorization": f"Bearer {os.environ['JINA_API_KEY']}"})

    def __call__(self, batch: Any) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np
        import pyarrow as pa

        texts = batch.column("text").to_pylist()
        chunks = [texts[start:start + self.batch] for start in range(0, len(texts), self.batch)]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            vectors = list(pool.map(self._embed, chunks))
        flat = pa.array(np.concatenate(vectors).astype(np.float32).reshape(-1))
        return pa.table({"id": batch.column("id"), "vector": pa.FixedSizeListArray.from_arrays(flat, self.dimensions)})

    def _pace(self) -> None:
        with self.lock:
            now = time.monotonic()
            wait, self.next_at = self.next_at - now, max(now, self.next_at) + self.interval
        if wait > 0:
            time.sleep(wait)

    def _embed(self, texts: list[str]) -> Any:
        import base64

        import numpy as np

        body = {"model": MODEL, "input": texts, "task": "retrieval.passage", "dimensions": self.dimensions,
                "embedding_type": "base64", "normalized": True}
        for _attempt in range(200):
            self._pace()
            response = self.client.post(self.url, json=body)
            if response.status_code == 429:
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            response.raise_for_status()
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data])
        raise RuntimeError("paced UDF: 200 rate-limited attempts in a row")


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One pipeline in this process, on its own local Ray."""
    import logging

    import ray

    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.read_parquet(args.corpus, columns=["id", "text"])
    api_base = os.environ["JINA_API_BASE"]
    if args.pipeline == "jinaembed":
        from embedder.ray_data import JinaEmbed

        kwargs = {"model": MODEL, "dimensions": args.dimensions, "text_column": "text", "output_column": "vector",
                  "batch_size": args.batch, "api_base": api_base, "limiter_name": "bench",
                  "limits": {"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency}}
        ds = ds.map_batches(JinaEmbed, fn_constructor_kwargs=kwargs, batch_format="pyarrow", concurrency=4,
                            batch_size=args.map_batch, num_cpus=0.25)
    else:
        ds = ds.map_batches(PacedHttpxUDF, fn_constructor_args=(api_base, args.dimensions, args.rpm, args.batch,
                                                                args.max_concurrency),
                            batch_format="pyarrow", concurrency=4, batch_size=args.map_batch, num_cpus=0.25)
    ds.write_parquet(args.out)
    rows = ray.data.read_parquet(args.out).count()
    ray.shutdown()
    return {"rows": rows}


# --- the comparison -----------------------------------------------------------------------------------------------
LABELS = {"jinaembed": "JinaEmbed (one shared limiter)", "paced-udf": "httpx UDF paced per actor"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1600)
    parser.add_argument("--words", type=int, default=12, help="words per row")
    parser.add_argument("--batch", type=int, default=4, help="rows per API request (both pipelines)")
    parser.add_argument("--map-batch", type=int, default=64, help="rows per map_batches batch")
    parser.add_argument("--rpm", type=int, default=300)
    parser.add_argument("--tpm", type=int, default=10_000_000)
    parser.add_argument("--max-concurrency", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--only", default="jinaembed,paced-udf", help="comma-separated subset to run")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--pipeline", choices=list(LABELS), help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_pipeline(name: str, work: Path, source: Path, server: Any, args: argparse.Namespace) -> dict[str, Any]:
    server.reset()
    out = work / name / "out"
    out.parent.mkdir(parents=True)
    command = [sys.executable, __file__, "--pipeline", name, "--corpus", str(source), "--out", str(out),
               *(f"--{key.replace('_', '-')}={getattr(args, key)}" for key in
                 ("batch", "map_batch", "rpm", "tpm", "max_concurrency", "dimensions"))]
    with private_ray_tmpdir("rb") as ray_tmp:
        run = bench.run_job(command, bench.job_env(server.url, RAY_TMPDIR=ray_tmp), timeout_s=1800,
                            log_path=work / name / "log")
    stats = server.stats()
    if run.returncode != 0:
        print(bench.tail(run.log, 30))
        raise SystemExit(f"ray_data: {name} failed with exit code {run.returncode}")
    rows = json.loads([line for line in run.log.splitlines() if line.startswith("{")][-1])["rows"]
    return {"name": name, "wall": run.wall_s, "requests": stats["requests"], "rate_limited": stats["rate_limited"],
            "billed": stats["billed_requests"], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pipeline:
        print(json.dumps(run_one(args)))
        return 0
    from embedder.mock_jina.testing import MockJinaServer

    bench.print_machine()
    source = bench.corpus(args.rows, args.words, files=2, row_group_rows=max(1, args.rows // 8))
    requests = -(-args.rows // args.batch)
    print(f"ray_data: {args.rows:,} rows of ~{args.words} words, {args.batch} a request ({requests} requests); server "
          f"{args.rpm} RPM, {args.tpm:,} TPM, {args.max_concurrency} concurrent, {args.latency_ms:g} ms; 4 actors, "
          f"{args.map_batch} rows a batch", flush=True)
    results = []
    options = {"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency,
               "latency_ms": args.latency_ms}
    with bench.workdir(args.keep, "raydata-") as work, MockJinaServer(**options) as server:
        for name in [name for name in args.only.split(",") if name]:
            results.append(run_pipeline(name, work, source, server, args))
    print(f"{'pipeline':34s} {'wall s':>8s} {'requests':>9s} {'429s':>6s} {'429s/100 req':>13s} {'rows':>7s}")
    for r in results:
        r["per100"] = 100 * r["rate_limited"] / max(1, r["requests"])
        print(f"{LABELS[r['name']]:34s} {r['wall']:8.1f} {r['requests']:9d} {r['rate_limited']:6d} "
              f"{r['per100']:13.1f} {r['rows']:7,d}")
    for r in results:
        print(f"FIGURE ray_data[{r['name']}] wall = {r['wall']:.1f} s, requests = {r['requests']}, "
              f"429s = {r['rate_limited']} ({r['per100']:.1f} per 100 requests), rows = {r['rows']:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
