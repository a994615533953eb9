"""Resume: rerunning a job that already finished must be quick and must not call the API at all.

    .venv/bin/python benchmarks/resume.py                     # 100,000 rows
    .venv/bin/python benchmarks/resume.py --rows 1000000      # full size

Embeds a corpus of short documents (~20 words) into Parquet against the local stand-in server (unthrottled),
then runs the very same command again ``--repeat`` times. Figures: the rerun's wall time (process start to exit,
median; target ≤ 10 s) and the API requests the server saw during the reruns (target: 0). The rerun reads the
input's Parquet footers to plan, finds every shard in the ledger, re-commits the manifest and writes its report;
it starts no Ray instance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

from embedder.mock_jina.testing import MockJinaServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="reruns (the median is the figure)")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.print_machine()
    source = bench.corpus(args.rows, args.words)
    with bench.workdir(args.keep, "resume-") as work, MockJinaServer() as server:
        job = bench.job_file(work / "job.toml", source=source, output=work / "out", rpm=10_000_000, tpm=10**12,
                             max_concurrency=8, workers=args.workers, dimensions=args.dimensions)
        command = bench.embedder_command(job)
        env = bench.job_env(server.url)
        first = bench.run_job(command, env, timeout_s=3600, log_path=work / "first.log")
        if first.returncode != 0:
            print(bench.tail(first.log, 30))
            raise SystemExit(f"resume: the first run failed with exit code {first.returncode}")
        before = server.stats()
        print(f"resume: first run embedded {args.rows:,} rows in {first.wall_s:.1f} s with {before['requests']:,} "
              f"requests", flush=True)
        walls = []
        for number in range(args.repeat):
            rerun = bench.run_job(command, env, timeout_s=600, log_path=work / f"rerun-{number}.log")
            if rerun.returncode != 0:
                print(bench.tail(rerun.log, 30))
                raise SystemExit(f"resume: rerun {number + 1} failed with exit code {rerun.returncode}")
            walls.append(rerun.wall_s)
            summary = next((line for line in rerun.log.splitlines() if "already done" in line), "")
            print(f"resume: rerun {number + 1}: {rerun.wall_s:.2f} s — {summary.strip()}", flush=True)
        after = server.stats()
    requests = after["requests"] - before["requests"]
    wall = statistics.median(walls)
    print(f"FIGURE resume rerun wall time = {wall:.2f} s (median of {len(walls)}; min {min(walls):.2f}, max "
          f"{max(walls):.2f}) at {args.rows:,} rows (target <= 10 s) {'OK' if wall <= 10 else 'MISSED'}")
    print(f"FIGURE resume API requests during reruns = {requests} (target 0) {'OK' if requests == 0 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
