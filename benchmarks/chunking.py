"""Chunking, measured: the splitter's own speed, the job's CPU per 1,000 chunks, and chunks/s end to end.

    .venv/bin/python benchmarks/chunking.py                       # 100 and 1,000 documents of ~2,400 tokens
    .venv/bin/python benchmarks/chunking.py --docs 5000 --docs-small 500 --repeat 3
    .venv/bin/python benchmarks/chunking.py --late-chunking       # one document per request (windows)

1. **The splitter alone** (``embedder.source.chunker.split_text``, semantic-text-splitter), in this process on one
   pinned core: MB of text per second and chunks per second, on the same documents the job embeds.
2. **The job**: ``embedder run`` with ``[chunking]`` into Parquet against the local stand-in server with no limits
   and no latency (the client is the bottleneck), at two corpus sizes side by side. The CPU of the job's own
   processes (the driver and our Ray actors; Ray's services and the server are not counted, see
   ``client_cost.py``) per 1,000 chunks is the slope between the two sizes (target: at most 0.2 s, the job's
   goal per 1,000 documents); chunks/s end to end is the large run's.
3. **What 100M tokens/min needs**: at ``max_tokens`` per chunk, 100M TPM is ``100e6 / 60 / max_tokens`` chunks per
   second; the splitter's share of a core and the whole job's are those rates times the measured costs.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench
import client_cost
import pyarrow.dataset as ds

from embedder.mock_jina.testing import MockJinaServer
from embedder.source.chunker import split_text

TARGET_TPM = 100_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="documents of the large run (default 1,000)")
    parser.add_argument("--docs-small", type=int, default=100, help="documents of the small run (default 100)")
    parser.add_argument("--tokens", type=int, default=2400, help="tokens per document, on average (0.5x to 2x)")
    parser.add_argument("--max-tokens", type=int, default=512, help="chunking.max_tokens (default 512)")
    parser.add_argument("--late-chunking", action="store_true", help="embedding.late_chunking = true")
    parser.add_argument("--shard-rows", type=int, default=1000, help="source.shard_rows (documents per shard)")
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="job limits.max_concurrency")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size; medians are reported")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also py-spy the driver, workers and sink during one large run; raw stacks go here")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def splitter_speed(source: Path, max_chars: int, repeat: int = 5) -> tuple[float, float, int]:
    """(MB/s, chunks/s, chunks) of the splitter alone on the corpus' texts, CPU time on one core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    texts = ds.dataset(source).to_table(columns=["text"])["text"].to_pylist()
    megabytes = sum(len(text.encode()) for text in texts) / 1e6
    times, chunks = [], 0
    for _ in range(repeat):
        fresh = [(text + " ")[:-1] for text in texts]  # new str objects: no cached UTF-8 copy from a previous pass
        started = time.process_time()
        chunks = sum(len(split_text(text, max_chars)) for text in fresh)
        times.append(time.process_time() - started)
    best = statistics.median(times)
    return megabytes / best, chunks / best, chunks


def job_runs(args: argparse.Namespace, sources: dict[str, Path]) -> dict[str, dict[str, float]]:
    overrides = [f"chunking.max_tokens={args.max_tokens}", f"source.shard_rows={args.shard_rows}"]
    if args.late_chunking:
        overrides.append("embedding.late_chunking=true")
    settings = argparse.Namespace(concurrency=args.concurrency, workers=args.workers, dimensions=args.dimensions,
                                  overrides=overrides)
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    with bench.workdir(args.keep, "chunking-") as work, MockJinaServer() as server:
        for number in range(args.repeat):
            for name, source in sources.items():
                result = client_cost.one_run(work, f"{name}-{number}", source, server, settings)
                result["chunks"] = ds.dataset(work / f"{name}-{number}" / "out").count_rows()
                runs[name].append(result)
                print(f"chunking: {name} run {number + 1}: {result['chunks']:,} chunks in {result['wall']:.1f} s "
                      f"wall, job CPU {result['job_cpu']:.2f} s, {result['requests']} requests", flush=True)
        if args.profile is not None:  # an extra large run: py-spy slows what it samples, so it is not counted
            client_cost.one_run(work, "profiled", sources["large"], server, settings, args.profile)
            client_cost.summarise_profile(args.profile)
    return {name: {key: statistics.median(r[key] for r in results) for key in ("wall", "job_cpu", "chunks")}
            for name, results in runs.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.docs <= args.docs_small:
        raise SystemExit("--docs must be larger than --docs-small")
    bench.print_machine()
    sources = {"small": bench.documents(args.docs_small, args.tokens), "large": bench.documents(args.docs, args.tokens)}
    max_chars = args.max_tokens * 4  # embedding.chars_per_token = 4.0
    mb_s, chunks_s, _ = splitter_speed(sources["large"], max_chars)
    print(f"FIGURE chunking splitter = {mb_s:,.1f} MB/s per core, {chunks_s:,.0f} chunks/s "
          f"(semantic-text-splitter, {max_chars:,}-character chunks, one core, CPU time)")
    print(f"chunking: {args.docs_small:,} and {args.docs:,} documents of ~{args.tokens:,} tokens, max_tokens "
          f"{args.max_tokens}, late chunking {'on' if args.late_chunking else 'off'}, {args.dimensions}-d, "
          f"{args.workers} workers, unthrottled local server, Parquet sink", flush=True)
    results = job_runs(args, sources)
    small, large = results["small"], results["large"]
    chunks = large["chunks"] - small["chunks"]
    per_1k = (large["job_cpu"] - small["job_cpu"]) / chunks * 1000
    print(f"FIGURE chunking job CPU = {per_1k:.3f} s per 1k chunks (driver + actor processes, slope between "
          f"{small['chunks']:,.0f} and {large['chunks']:,.0f} chunks) (target <= 0.2) "
          f"{'OK' if per_1k <= 0.2 else 'MISSED'}")
    print(f"FIGURE chunking end-to-end = {large['chunks'] / large['wall']:,.0f} chunks/s at {large['chunks']:,.0f} "
          f"chunks ({large['wall']:.1f} s wall incl. start-up); "
          f"{chunks / max(1e-9, large['wall'] - small['wall']):,.0f} chunks/s marginal")
    needed = TARGET_TPM / 60 / args.max_tokens  # chunks per second at 100M tokens/min
    print(f"FIGURE chunking at 100M tokens/min = {needed:,.0f} chunks/s: the splitter needs "
          f"{needed / chunks_s:.3f} of a core, the whole job {needed * per_1k / 1000:.2f} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
