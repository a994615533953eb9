"""Memory scale: the job's peak resident memory for a corpus 10x larger should stay where it was.

    .venv/bin/python benchmarks/memory_scale.py                                      # 20,000 vs 200,000 rows
    .venv/bin/python benchmarks/memory_scale.py --rows-small 100000 --rows-large 1000000

Two corpora of short documents (~20 words, so a million rows embed in minutes) go through ``embedder run`` into
Parquet against the local stand-in server with no limits (unthrottled). The resident memory (RSS) of every process
of the job is sampled every 0.2 s; the figure is the peak of the sum over the job's own processes (the driver and
the Ray worker processes running our actors), large against small (target: within 15%). Ray's services (gcs,
raylet, agents) are shown apart. RSS counts the object-store pages a process has touched, so a table that a
worker put in the object store and the sink read shows in both: that is bounded by the shards in flight too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

from embedder.mock_jina.testing import MockJinaServer

MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-small", type=int, default=20_000)
    parser.add_argument("--rows-large", type=int, default=200_000)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files", type=int, default=4, help="corpus files (rows are spread over them)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size, alternating; medians are used")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def one_run(work: Path, name: str, rows: int, server: MockJinaServer, args: argparse.Namespace) -> dict[str, Any]:
    source = bench.corpus(rows, args.words, files=args.files)
    run_dir = work / name
    run_dir.mkdir()
    job = bench.job_file(run_dir / "job.toml", source=source, output=run_dir / "out", rpm=10_000_000, tpm=10**12,
                         max_concurrency=8, workers=args.workers, dimensions=args.dimensions)
    server.reset()
    run = bench.run_job(bench.embedder_command(job, args.overrides), bench.job_env(server.url), timeout_s=3600,
                        log_path=run_dir / "job.log", monitor=True, monitor_interval=0.2)
    if run.returncode != 0:
        print(bench.tail(run.log, 30))
        raise SystemExit(f"memory_scale: the {name} job failed with exit code {run.returncode}")
    monitor = run.monitor
    assert monitor is not None
    report = run.report(run_dir / "out" / "_checkpoint")
    return {"name": name, "rows": rows, "wall": run.wall_s, "peak_job": monitor.peak_rss(("driver", "actor")),
            "peak_driver": monitor.peak_rss(("driver",)), "peak_actors": monitor.peak_rss(("actor",)),
            "peak_ray": monitor.peak_rss(("ray",)),
            "peak_private": monitor.peak_rss(("driver", "actor"), private=True),
            "peak_all": monitor.peak_rss(("driver", "actor", "ray")),
            "by_title": monitor.by_title(), "samples": len(monitor.samples),
            "embedded": report.get("progress", {}).get("documents_embedded", 0)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.print_machine()
    print(f"memory_scale: {args.rows_small:,} vs {args.rows_large:,} rows of ~{args.words} words, "
          f"{args.dimensions}-d, {args.workers} workers, unthrottled local server, Parquet sink", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    with bench.workdir(args.keep, "memory-scale-") as work, MockJinaServer() as server:
        for number in range(args.repeat):
            for name, rows in (("small", args.rows_small), ("large", args.rows_large)):
                result = one_run(work, f"{name}-{number}", rows, server, args)
                runs[name].append(result)
                print(f"memory_scale: {name}: {rows:,} rows ({result['embedded']:,} embedded) in "
                      f"{result['wall']:.1f} s; peak RSS of the job's processes {result['peak_job'] / MIB:,.0f} MiB "
                      f"(driver {result['peak_driver'] / MIB:,.0f}, actors {result['peak_actors'] / MIB:,.0f}; "
                      f"without shared object-store pages {result['peak_private'] / MIB:,.0f}); Ray services "
                      f"{result['peak_ray'] / MIB:,.0f} MiB; {result['samples']} samples", flush=True)
    results = {name: _median_run(items) for name, items in runs.items()}
    small, large = results["small"], results["large"]
    print("memory_scale: peak RSS of one process, by process: small | large")
    for title in dict.fromkeys([*small["by_title"], *large["by_title"]]):
        s = small["by_title"].get(title, (0, 0.0, 0))
        la = large["by_title"].get(title, (0, 0.0, 0))
        print(f"    {title:26s} {s[2] / MIB:7.0f} MiB | {la[2] / MIB:7.0f} MiB")
    ratio = large["peak_job"] / small["peak_job"]
    print(f"FIGURE memory_scale peak RSS (driver + actors) = {large['peak_job'] / MIB:,.0f} MiB at "
          f"{args.rows_large:,} rows vs {small['peak_job'] / MIB:,.0f} MiB at {args.rows_small:,} rows: "
          f"x{ratio:.3f} (target <= 1.15) {'OK' if ratio <= 1.15 else 'MISSED'}")
    private = large["peak_private"] / small["peak_private"]
    print(f"FIGURE memory_scale peak private RSS (driver + actors, object-store pages left out) = "
          f"{large['peak_private'] / MIB:,.0f} MiB vs {small['peak_private'] / MIB:,.0f} MiB: x{private:.3f}")
    print(f"FIGURE memory_scale whole tree incl. Ray services = {large['peak_all'] / MIB:,.0f} MiB vs "
          f"{small['peak_all'] / MIB:,.0f} MiB (x{large['peak_all'] / small['peak_all']:.3f})")
    return 0


def _median_run(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose peak is the median one (so its per-process figures belong together)."""
    ordered = sorted(items, key=lambda r: r["peak_job"])
    return ordered[(len(ordered) - 1) // 2]


if __name__ == "__main__":
    sys.exit(main())
