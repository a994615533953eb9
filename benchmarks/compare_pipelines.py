"""Three ways to embed one corpus against one rate-limited API, side by side in one run.

    .venv/bin/python benchmarks/compare_pipelines.py                 # small: 4,000 documents each
    .venv/bin/python benchmarks/compare_pipelines.py --rows 60000    # full: ~12M tokens each, minutes at the limit

1. **this job**: ``embedder run`` (Ray actors, one cluster-wide limiter, base64 vectors, Parquet parts).
2. **the seed's way**: the pattern of pymilvus-model's ``JinaEmbeddingFunction``, re-implemented in ~20 lines with
   a synchronous httpx client: one request per call of up to ``--batch`` texts, float JSON, sequential, no status
   check (a non-200 answer raises ``RuntimeError(detail)``). The seed has no retries, so a 429 would end the run;
   here the loop around it does what its users do: sleep one second and call again.
3. **Ray Data**: ``ray.data.read_parquet`` → ``map_batches`` with an async httpx callable class (one request per
   batch of ``--batch`` rows, base64, 4 actors x Ray Data's default 4 concurrent batches each, retrying 429s after
   Retry-After) → ``write_parquet``. No shared limiter: each request learns about the limits from 429s.

All three talk to the same local stand-in server with the same limits (default 600 RPM, 2M TPM, 20 concurrent,
300 ms + 20 ms per 1k tokens of latency, as benchmarks/quota_use.py), one after the other, the server's windows
and counters reset in between (each starts with a fresh key), and the same requests: ``--batch`` documents of ~200
tokens (default: as many as this job packs into its 65,536-token requests). For each: wall time (process start to
exit, start-up included), achieved tokens/min over that wall time ÷ the TPM limit, 429 answers, requests, and the
rows in its output. A run shorter than a minute can show more than 1.0: a sliding window lets a fresh key spend a
minute's quota at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

TOKENS_PER_WORD = 1.2
MAX_TOKENS_PER_REQUEST = 65_536  # embedder.jina.embedding.DEFAULT_MAX_TOKENS_PER_REQUEST


# --- 2. the seed's way ------------------------------------------------------------------------------------------
class SeedJinaEmbeddingFunction:
    """pymilvus-model's JinaEmbeddingFunction, as it calls the API (dense/jinaai.py): no batching, no retries, no
    timeout handling, float JSON, the status never checked; ``np.array`` of each float list (float64)."""

    def __init__(self, model_name: str, api_key: str, api_base: str, task: str, dimensions: int) -> None:
        import httpx

        self.model_name, self.task, self.dimensions = model_name, task, dimensions
        self.url = f"{api_base}/embeddings"
        self._session = httpx.Client(timeout=None, trust_env=False,
                                     headers={"Authorization": f"Bearer {api_key}"})

    def encode_documents(self, documents: list[str]) -> list[Any]:
        return self._call_jina_api(documents, task=self.task)

    def _call_jina_api(self, texts: list[str], task: str | None = None) -> list[Any]:
        import numpy as np

        data = {"input": texts, "model": self.model_name, "task": task, "late_chunking": False,
                "dimensions": self.dimensions}
        resp = self._session.post(self.url, json=data).json()
        if "data" not in resp:
            raise RuntimeError(resp["detail"])
        embeddings = resp["data"]
        sorted_embeddings = sorted(embeddings, key=lambda e: e["index"])
        return [np.array(result["embedding"]) for result in sorted_embeddings]


def run_seed(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ef = SeedJinaEmbeddingFunction("jina-embeddings-v3", os.environ["JINA_API_KEY"], os.environ["JINA_API_BASE"],
                                   "retrieval.passage", args.dimensions)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = retries = 0
    for number, path in enumerate(sorted(Path(args.corpus).glob("*.parquet"))):
        table = pq.read_table(path, columns=["id", "text"])
        texts = table.column("text").to_pylist()
        vectors: list[Any] = []
        for start in range(0, len(texts), args.batch):
            for _attempt in range(600):  # bounded: what a user's loop around the seed does after an error
                try:
                    vectors.extend(ef.encode_documents(texts[start:start + args.batch]))
                    break
                except RuntimeError:
                    retries += 1
                    time.sleep(1.0)
            else:
                raise SystemExit("seed: gave up after 600 errors in a row")
        flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1))
        pq.write_table(pa.table({"id": table.column("id"),
                                 "vector": pa.FixedSizeListArray.from_arrays(flat, args.dimensions)}),
                       out / f"part-{number:04d}.parquet")
        rows += table.num_rows
    return {"rows": rows, "client_retries": retries}


# --- 3. Ray Data ------------------------------------------------------------------------------------------------
class JinaBatchUDF:
    """An async callable class for ``map_batches``: one request per batch, base64 vectors, 429s retried."""

    def __init__(self, api_base: str, dimensions: int) -> None:
        import httpx

        self.dimensions = dimensions
        self.url = f"{api_base}/embeddings"
        self.client = httpx.AsyncClient(timeout=120, trust_env=False, limits=httpx.Limits(max_connections=16),
                                        headers={"Authorization": f"Bearer {os.environ['JINA_API_KEY']}"})

    async def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        body = {"model": "jina-embeddings-v3", "input": batch.column("text").to_pylist(),
                "task": "retrieval.passage", "dimensions": self.dimensions, "embedding_type": "base64",
                "normalized": True}
        for _attempt in range(100):
            response = await self.client.post(self.url, json=body)
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            response.raise_for_status()
            break
        else:
            raise RuntimeError("ray data: 100 rate-limited attempts in a row")
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        raw = b"".join(base64.b64decode(item["embedding"]) for item in data)
        flat = pa.array(np.frombuffer(raw, dtype="<f4"))
        yield pa.table({"id": batch.column("id"),
                        "vector": pa.FixedSizeListArray.from_arrays(flat, self.dimensions)})


def run_ray_data(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import ray

    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.read_parquet(args.corpus, columns=["id", "text"])
    ds = ds.map_batches(JinaBatchUDF, fn_constructor_args=(os.environ["JINA_API_BASE"], args.dimensions),
                        batch_size=args.batch, batch_format="pyarrow", concurrency=4, num_cpus=0.25)
    ds.write_parquet(args.out)
    rows = ray.data.read_parquet(args.out).count()
    ray.shutdown()
    return {"rows": rows}


# --- the comparison ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000, help="documents embedded by each pipeline")
    parser.add_argument("--words", type=int, default=165, help="words per document (165 ≈ 200 tokens)")
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=2_000_000)
    parser.add_argument("--max-concurrency", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--latency-ms-per-1k", type=float, default=20.0)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=0,
                        help="documents per request for all three (default: what this job packs, ~65k tokens)")
    parser.add_argument("--workers", type=int, default=4, help="this job's embedding workers")
    parser.add_argument("--only", default="job,seed,ray-data", help="comma-separated subset to run")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--pipeline", choices=["seed", "ray-data"], help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def documents_per_request(args: argparse.Namespace) -> int:
    if args.batch:
        return args.batch
    # what embedder packs: its estimate starts at 3 characters a token and then follows what the server bills;
    # the corpus's ~6.5 characters a word at ~1.2 tokens a word gives ~5.4 characters a token once calibrated
    return max(1, MAX_TOKENS_PER_REQUEST // round(TOKENS_PER_WORD * args.words + 2))


def run_pipeline(name: str, work: Path, source: Path, server: Any, args: argparse.Namespace) -> dict[str, Any]:
    server.reset()
    out = work / name / "out"
    out.parent.mkdir(parents=True)
    env = bench.job_env(server.url)
    if name == "job":
        job = bench.job_file(work / name / "job.toml", source=source, output=out, rpm=args.rpm, tpm=args.tpm,
                             max_concurrency=args.max_concurrency, workers=args.workers,
                             dimensions=args.dimensions)
        command = bench.embedder_command(job)
    else:
        command = [sys.executable, __file__, "--pipeline", name, "--corpus", str(source), "--out", str(out),
                   "--batch", str(args.batch), "--dimensions", str(args.dimensions)]
    run = bench.run_job(command, env, timeout_s=3600, log_path=work / name / "log")
    stats = server.stats()
    if run.returncode != 0:
        print(bench.tail(run.log, 30))
        raise SystemExit(f"compare_pipelines: {name} failed with exit code {run.returncode}")
    rows = _output_rows(out)
    return {"name": name, "wall": run.wall_s, "tokens": stats["tokens"], "requests": stats["requests"],
            "rate_limited": stats["rate_limited"], "rows": rows, "max_concurrent": stats["max_concurrent_seen"]}


def _output_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in path.rglob("*.parquet")
               if not any(piece.startswith(("_", ".")) for piece in part.relative_to(path).parts))


LABELS = {"job": "this job (embedder run)", "seed": "seed's way (sequential, float)",
          "ray-data": "Ray Data map_batches (async)"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pipeline:  # one pipeline, in its own process
        result = run_seed(args) if args.pipeline == "seed" else run_ray_data(args)
        print(json.dumps(result))
        return 0
    from embedder.mock_jina.testing import MockJinaServer

    bench.print_machine()
    args.batch = documents_per_request(args)
    source = bench.corpus(args.rows, args.words)
    names = [name for name in args.only.split(",") if name]
    server_options = {"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency,
                      "latency_ms": args.latency_ms, "latency_ms_per_1k_tokens": args.latency_ms_per_1k}
    print(f"compare_pipelines: {args.rows:,} documents of ~{TOKENS_PER_WORD * args.words + 2:.0f} tokens each; "
          f"server {args.rpm} RPM, {args.tpm:,} TPM, {args.max_concurrency} concurrent, {args.latency_ms:g} ms + "
          f"{args.latency_ms_per_1k:g} ms/1k tokens; {args.batch} documents per request; {args.dimensions}-d",
          flush=True)
    results = []
    with bench.workdir(args.keep, "compare-") as work, MockJinaServer(**server_options) as server:
        for name in names:
            result = run_pipeline(name, work, source, server, args)
            results.append(result)
            print(f"compare_pipelines: {LABELS[name]}: {result['wall']:.1f} s, {result['rows']:,} rows, "
                  f"{result['requests']} requests, {result['rate_limited']} 429s", flush=True)
    print(f"{'pipeline':34s} {'wall s':>8s} {'tokens/min ÷ limit':>19s} {'429s':>6s} {'requests':>9s} "
          f"{'rows out':>9s} {'floor/wall':>10s}")
    for r in results:
        ratio = r["tokens"] / (r["wall"] / 60) / args.tpm
        # the shortest time the limit allows: a fresh sliding window takes one minute's tokens at once, then
        # one minute's worth per minute
        r["floor"] = max(0.0, (r["tokens"] - args.tpm) / args.tpm * 60)
        r["ratio"] = ratio
        print(f"{LABELS[r['name']]:34s} {r['wall']:8.1f} {ratio:19.3f} {r['rate_limited']:6d} {r['requests']:9d} "
              f"{r['rows']:9,d} {r['floor'] / r['wall']:10.3f}")
    print(f"(floor: the shortest wall time {args.tpm:,} tokens/min allows for these tokens, "
          f"{results[0]['floor'] if results else 0:.0f} s; floor/wall = 1 would be perfect)")
    for r in results:
        print(f"FIGURE compare_pipelines[{r['name']}] wall = {r['wall']:.1f} s, tokens/min ÷ limit = "
              f"{r['ratio']:.3f}, 429s = {r['rate_limited']}, rows = {r['rows']:,}")
    if "job" in names and len(results) > 1:
        job = next(r for r in results if r["name"] == "job")
        others = [r for r in results if r["name"] != "job"]
        leads = all(job["wall"] <= o["wall"] and job["ratio"] >= o["ratio"] and
                    job["rate_limited"] <= o["rate_limited"] for o in others)
        print(f"compare_pipelines: this job {'leads on every figure' if leads else 'does NOT lead on every figure'}"
              f" (wall time, tokens/min, 429s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
