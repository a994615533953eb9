"""Client cost: CPU seconds the job's own processes spend per 1,000 documents, and documents/s end to end.

    .venv/bin/python benchmarks/client_cost.py                      # small: 2,000 and 20,000 rows
    .venv/bin/python benchmarks/client_cost.py --rows 200000 --repeat 3
    .venv/bin/python benchmarks/client_cost.py --profile /tmp/client-cost-profile   # + py-spy of the processes

Documents of ~300 tokens at 1024 dimensions (base64 on the wire) go through ``embedder run`` into Parquet
against the local stand-in server with no limits and no latency (unthrottled: the client is the bottleneck).

What is counted: the CPU time (user + system, from /proc via psutil, sampled every 0.2 s) of the job's own
processes: the ``embedder run`` driver and the Ray worker processes that run our actors (embedding workers, the
sink writer, the rate limiter: processes titled ``ray::...``). Ray's own services (gcs_server, raylet, dashboard
and runtime-env agents, log monitor, autoscaler monitor) are counted apart, and the stand-in server (which is not
part of the job) is not counted at all.

Each run has a fixed part (starting Python, importing Ray, starting a local Ray instance and the actors, planning,
the id check, committing the manifest) and a part proportional to the documents. Two corpus sizes are run side by
side, so the per-document cost is the slope between them and the fixed cost its intercept:

    per-document cost = (CPU(large) - CPU(small)) / (rows(large) - rows(small))    (target <= 0.2 s per 1k docs)
    fixed cost        = CPU(small) - per-document cost x rows(small)

The total CPU per 1,000 documents at the large size (fixed cost included) is printed too.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

from embedder.mock_jina.testing import MockJinaServer

JOB_CATEGORIES = ("driver", "actor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the large run (default 20,000)")
    parser.add_argument("--rows-small", type=int, default=2_000, help="rows of the small run (default 2,000)")
    parser.add_argument("--words", type=int, default=250, help="words per document (250 ≈ 300 tokens)")
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="job limits.max_concurrency")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size; medians are reported")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra job override (repeatable)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also py-spy the driver, workers and sink during one large run; raw stacks go here")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def one_run(work: Path, name: str, source: Path, server: MockJinaServer, args: argparse.Namespace,
            profile: Path | None = None) -> dict[str, Any]:
    run_dir = work / name
    run_dir.mkdir()
    job = bench.job_file(run_dir / "job.toml", source=source, output=run_dir / "out", rpm=10_000_000,
                         tpm=10**12, max_concurrency=args.concurrency, workers=args.workers,
                         dimensions=args.dimensions)
    server.reset()
    spies: list[subprocess.Popen[bytes]] = []
    root: list[int] = []

    def tick(elapsed: float) -> bool:
        if profile is not None and not spies and root:
            spies.extend(start_spies(root[0], profile / name, args.workers))
        return False

    started = time.monotonic()
    result = bench.run_job(bench.embedder_command(job, args.overrides), bench.job_env(server.url),
                           timeout_s=1800, log_path=run_dir / "job.log", monitor=True, on_tick=tick,
                           on_start=root.append)
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
    wall = time.monotonic() - started
    if result.returncode != 0:
        print(bench.tail(result.log, 40))
        raise SystemExit(f"client_cost: the {name} job failed with exit code {result.returncode}")
    stats = server.stats()
    assert result.monitor is not None
    cpu = result.monitor.cpu()
    report = result.report(run_dir / "out" / "_checkpoint")
    return {"name": name, "wall": wall, "job_elapsed": report.get("elapsed_s", wall), "cpu": cpu,
            "job_cpu": sum(cpu[c] for c in JOB_CATEGORIES), "ray_cpu": cpu["ray"],
            "by_title": result.monitor.by_title(), "requests": stats["requests"], "inputs": stats["inputs"],
            "tokens": stats["tokens"]}


SPIED = ("driver", "ray::RayEmbedWorker", "ray::SinkWriter", "ray::LimiterActor")


def start_spies(root_pid: int, out: Path, workers: int) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` (100 Hz, raw stacks, until the process exits) on the driver and our actors, once all
    the embedding workers exist (else nothing yet: the caller asks again a second later)."""
    import psutil

    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        print("client_cost: py-spy is not installed (pip install -e '.[bench]'); no profile")
        return []
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    try:
        processes = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.Error:
        return []
    titles = [bench.title(proc, root_pid) for proc in processes]
    if titles.count("ray::RayEmbedWorker") < workers:
        return []
    for number, proc in enumerate(processes):
        name = bench.title(proc, root_pid)
        if name not in SPIED:
            continue
        target = out / f"{name.replace('ray::', '')}-{number}.txt"
        spies.append(subprocess.Popen([str(py_spy), "record", "-p", str(proc.pid), "-r", "100", "-f", "raw",
                                       "-o", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def summarise_profile(directory: Path, top: int = 15) -> None:
    """Self time per function (leaf frame) over every sampled process of a kind, idle waits left out."""
    idle = ("select (selectors", "wait (threading", "_worker (concurrent", "main_loop (ray", "Condition.wait",
            "Event.wait", "run_forever (asyncio", "sleep (")
    groups: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in sorted(directory.glob("*/*.txt")):
        kind = path.stem.rsplit("-", 1)[0]
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if not stack or any(word in frames[-1] for word in idle) or not count.isdigit():
                continue
            groups[kind][frames[-1]] += int(count)
    for kind, counter in groups.items():
        total = sum(counter.values())
        print(f"client_cost: profile of {kind}: {total / 100:.1f} s of busy samples; top functions by self time:")
        for frame, count in counter.most_common(top):
            print(f"    {100 * count / total:5.1f}%  {frame[:110]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rows <= args.rows_small:
        raise SystemExit("--rows must be larger than --rows-small")
    bench.print_machine()
    small_source = bench.corpus(args.rows_small, args.words)
    large_source = bench.corpus(args.rows, args.words)
    print(f"client_cost: {args.rows_small:,} and {args.rows:,} rows of ~{args.words} words (~"
          f"{1.2 * args.words + 2:.0f} tokens), {args.dimensions}-d base64, {args.workers} workers, unthrottled "
          f"local server, Parquet sink; {args.repeat} run(s) of each size, alternating", flush=True)
    runs: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    with bench.workdir(args.keep, "client-cost-") as work, MockJinaServer() as server:
        for number in range(args.repeat):
            for name, source in (("small", small_source), ("large", large_source)):
                result = one_run(work, f"{name}-{number}", source, server, args)
                runs[name].append(result)
                print(f"client_cost: {name} run {number + 1}: {result['wall']:.1f} s wall, job CPU "
                      f"{result['job_cpu']:.2f} s (driver {result['cpu']['driver']:.2f}, actors "
                      f"{result['cpu']['actor']:.2f}), Ray services {result['ray_cpu']:.2f} s, "
                      f"{result['requests']} requests", flush=True)
        if args.profile is not None:  # an extra large run: py-spy slows what it samples, so it is not counted
            one_run(work, "profiled", large_source, server, args, args.profile)
            summarise_profile(args.profile)
    small, large = (_medians(runs[name]) for name in ("small", "large"))
    rows = args.rows - args.rows_small
    per_doc = (large["job_cpu"] - small["job_cpu"]) / rows * 1000
    fixed = small["job_cpu"] - per_doc * args.rows_small / 1000
    ray_per_doc = (large["ray_cpu"] - small["ray_cpu"]) / rows * 1000
    ray_fixed = small["ray_cpu"] - ray_per_doc * args.rows_small / 1000
    marginal_rate = rows / max(1e-9, large["wall"] - small["wall"])
    print(f"client_cost: CPU seconds by process (median over runs): {args.rows_small:,} rows | {args.rows:,} rows | "
          "slope per 1k docs | peak RSS of one process")
    titles = dict.fromkeys(name for r in runs["large"] + runs["small"] for name in r["by_title"])
    for name in titles:
        cpu_small = statistics.median(r["by_title"].get(name, (0, 0.0, 0))[1] for r in runs["small"])
        cpu_large = statistics.median(r["by_title"].get(name, (0, 0.0, 0))[1] for r in runs["large"])
        count = max(r["by_title"].get(name, (0, 0.0, 0))[0] for r in runs["large"])
        peak = max(r["by_title"].get(name, (0, 0.0, 0))[2] for r in runs["large"])
        print(f"    {name:26s} x{count:<2d} {cpu_small:7.2f} s | {cpu_large:7.2f} s | "
              f"{(cpu_large - cpu_small) / rows * 1000:6.3f} s | {peak / 2**20:5.0f} MiB")
    print(f"FIGURE client_cost per-document CPU = {per_doc:.3f} s per 1k docs (driver + actor processes, slope "
          f"between {args.rows_small:,} and {args.rows:,} rows) (target <= 0.2) {'OK' if per_doc <= 0.2 else 'MISSED'}")
    print(f"FIGURE client_cost total CPU at {args.rows:,} rows = {large['job_cpu'] / args.rows * 1000:.3f} s per 1k "
          f"docs (fixed cost included: {large['job_cpu']:.1f} s for {args.rows:,} docs)")
    print(f"FIGURE client_cost fixed CPU per run = {fixed:.2f} s (driver + actors: Python and Ray start-up, actor "
          f"creation, planning, commit); Ray services: {ray_fixed:.2f} s fixed + {ray_per_doc:.3f} s per 1k docs")
    print(f"FIGURE client_cost end-to-end = {args.rows / large['wall']:,.0f} docs/s at {args.rows:,} rows "
          f"({large['wall']:.1f} s wall incl. start-up); {marginal_rate:,.0f} docs/s marginal (slope); "
          f"small run {small['wall']:.1f} s wall")
    return 0


def _medians(results: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in ("wall", "job_cpu", "ray_cpu")}


if __name__ == "__main__":
    sys.exit(main())
