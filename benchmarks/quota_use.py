"""Quota use: how much of a rate-limited key's tokens/minute the job gets, and how many 429s it takes.

    .venv/bin/python benchmarks/quota_use.py                       # small: 1 burst minute + 1 steady minute
    .venv/bin/python benchmarks/quota_use.py --minutes 5 --png docs/img/quota_use.png --csv /tmp/quota_use.csv
    .venv/bin/python benchmarks/quota_use.py --nodes 2 --minutes 5 --png docs/img/quota_use_2nodes.png

The local stand-in server enforces sliding-60-s limits (default 600 RPM, 2M TPM, 20 concurrent requests, 300 ms
+ 20 ms per 1k tokens of latency); the job is given the same limits. Documents have ~200 tokens. The server's
``/stats`` is polled every second. The first minute after the first request is the burst (a sliding window lets
a fresh key spend a whole minute's quota at once); the following ``--minutes`` are the steady state, where the
figures are taken:

- achieved tokens/min ÷ the binding limit (target ≥ 0.95),
- 429 answers per 100 requests (target ≤ 1).

The job is then stopped with Ctrl-C (it keeps what it finished). A CSV of the time series and a PNG of the
rolling-60-s tokens/minute against the limit are written. ``--nodes 2`` runs the same on a local 2-node cluster
(``ray start --head`` + ``ray start --address``, one CPU each, own temp dirs, stopped at the end) with the workers
spread over both nodes.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

from embedder.mock_jina.testing import MockJinaServer
from embedder.testing import RayCluster

TOKENS_PER_WORD = 1.2  # the stand-in server's token rule on the sample corpus (~143 tokens for 120 words)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="steady-state minutes measured (default 1)")
    parser.add_argument("--burst-s", type=float, default=60.0, help="seconds of burst before the steady state")
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=2_000_000)
    parser.add_argument("--max-concurrency", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--latency-ms-per-1k", type=float, default=20.0, help="server latency per 1k tokens")
    parser.add_argument("--words", type=int, default=165, help="words per document (165 ≈ 200 tokens)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=1, choices=[1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra job override, e.g. embedding.max_tokens_per_request=16384 (repeatable)")
    parser.add_argument("--csv", type=Path, default=None, help="time series CSV (default in the work dir)")
    parser.add_argument("--png", type=Path, default=None, help="plot (default in the work dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def corpus_rows(args: argparse.Namespace) -> int:
    tokens_per_doc = TOKENS_PER_WORD * args.words + 2
    minutes = args.burst_s / 60 + args.minutes + 0.75  # margin: the job must not run dry before the end
    return max(2000, math.ceil(args.tpm * minutes / tokens_per_doc / 1000) * 1000)


def summarise(series: list[tuple[float, dict[str, Any]]], t0: float, args: argparse.Namespace) -> dict[str, Any]:
    start, end = t0 + args.burst_s, t0 + args.burst_s + args.minutes * 60
    minutes = (end - start) / 60
    tokens = bench.at(series, end, "tokens") - bench.at(series, start, "tokens")
    billed = bench.at(series, end, "billed_requests") - bench.at(series, start, "billed_requests")
    requests = bench.at(series, end, "requests") - bench.at(series, start, "requests")
    limited = bench.at(series, end, "rate_limited") - bench.at(series, start, "rate_limited")
    total_requests = bench.at(series, end, "requests")
    total_limited = bench.at(series, end, "rate_limited")
    token_ratio = tokens / minutes / args.tpm
    request_ratio = billed / minutes / args.rpm
    binding = "tpm" if token_ratio >= request_ratio else "rpm"
    return {
        "steady_minutes": minutes, "tokens_per_min": tokens / minutes, "requests_per_min": billed / minutes,
        "tpm_ratio": token_ratio, "rpm_ratio": request_ratio, "binding": binding,
        "ratio": max(token_ratio, request_ratio), "requests": requests, "rate_limited": limited,
        "per_100": 100 * limited / requests if requests else 0.0,
        "all_requests": total_requests, "all_rate_limited": total_limited,
        "all_per_100": 100 * total_limited / total_requests if total_requests else 0.0,
        "burst_tokens": bench.at(series, start, "tokens"),
        "max_concurrent_seen": series[-1][1].get("max_concurrent_seen", 0) if series else 0,
    }


def write_csv(path: Path, series: list[tuple[float, dict[str, Any]]], t0: float) -> None:
    rolling_tokens = dict(bench.rolling(series, "tokens"))
    rolling_requests = dict(bench.rolling(series, "billed_requests"))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_s", "requests", "billed_requests", "tokens", "rate_limited", "in_flight",
                         "tokens_last_60s", "requests_last_60s"])
        for stamp, stats in series:
            writer.writerow([round(stamp - t0, 2), stats["requests"], stats["billed_requests"], stats["tokens"],
                             stats["rate_limited"], stats.get("in_flight", 0), int(rolling_tokens[stamp]),
                             int(rolling_requests[stamp])])


def plot(path: Path, series: list[tuple[float, dict[str, Any]]], t0: float, args: argparse.Namespace,
         figures: dict[str, Any], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot: matplotlib is not installed (pip install -e '.[bench]'); no PNG written")
        return False
    points = [(stamp - t0, value) for stamp, value in bench.rolling(series, "tokens") if stamp >= t0]
    limited = [(stamp - t0, stats["rate_limited"]) for stamp, stats in series if stamp >= t0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=[3, 1])
    top.plot([p[0] for p in points], [p[1] / 1e6 for p in points], label="tokens in the last 60 s (server)")
    top.axhline(args.tpm / 1e6, color="red", linestyle="--", label=f"limit {args.tpm / 1e6:g}M tokens/min")
    top.axhline(0.95 * args.tpm / 1e6, color="orange", linestyle=":", label="95% of the limit")
    top.axvspan(0, args.burst_s, color="grey", alpha=0.15, label="burst (first minute)")
    top.set_ylabel("tokens / minute (M)")
    top.set_ylim(0, args.tpm / 1e6 * 1.15)
    top.set_title(title)
    top.legend(loc="center left", fontsize=8)
    top.text(args.burst_s + 2, args.tpm / 1e6 * 0.35,
             f"steady state: {figures['tpm_ratio']:.3f} of the limit, {figures['per_100']:.2f} 429s per 100 requests",
             fontsize=9)
    bottom.plot([p[0] for p in limited], [p[1] for p in limited], color="purple")
    bottom.set_ylabel("429s (cumulative)")
    bottom.set_xlabel("seconds since the first request")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.print_machine()
    rows = corpus_rows(args)
    source = bench.corpus(rows, args.words)
    server_options = {"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency,
                      "latency_ms": args.latency_ms, "latency_ms_per_1k_tokens": args.latency_ms_per_1k}
    cluster = RayCluster(num_cpus=1) if args.nodes == 2 else None  # and a second node of 1 CPU, below
    with bench.workdir(args.keep, "quota-use-") as work, MockJinaServer(**server_options) as server:
        csv_path = args.csv or work / "quota_use.csv"
        png_path = args.png or work / "quota_use.png"
        extra_sets = list(args.overrides)
        cpus_per_worker = 0.25
        try:
            if cluster is not None:
                cluster.start().add_node(num_cpus=1, resources={"node2": 1})
                cpus_per_worker = 0.5  # one CPU per node: at most two workers fit on a node, so four use both
            job = bench.job_file(work / "job.toml", source=source, output=work / "out", rpm=args.rpm, tpm=args.tpm,
                                 max_concurrency=args.max_concurrency, workers=args.workers,
                                 cpus_per_worker=cpus_per_worker)
            env = bench.job_env(server.url)
            if cluster is not None:
                env = cluster.client_env(env, connect=True)
            print(f"quota_use: {rows:,} rows of ~{args.words} words (~{TOKENS_PER_WORD * args.words + 2:.0f} tokens); "
                  f"server and job limits {args.rpm} RPM, {args.tpm:,} TPM, {args.max_concurrency} concurrent; "
                  f"latency {args.latency_ms:g} ms + {args.latency_ms_per_1k:g} ms/1k tokens; {args.workers} workers "
                  f"on {args.nodes} node(s); burst {args.burst_s:g} s, then {args.minutes:g} min measured", flush=True)
            poller = bench.StatsPoller(server, interval=1.0).start()
            state: dict[str, Any] = {"t0": None, "spread": {}}

            def tick(_elapsed: float) -> bool:
                series = poller.series
                if state["t0"] is None:
                    first = next((stamp for stamp, stats in series if stats["requests"] > 0), None)
                    if first is None:
                        return False
                    state["t0"] = first
                now = series[-1][0]
                if cluster is not None and now - state["t0"] > 10:
                    state["spread"] = workers_per_node(cluster, state["spread"])
                return now >= state["t0"] + args.burst_s + args.minutes * 60 + 1.5

            timeout = 300 + args.burst_s + args.minutes * 60
            run = bench.run_job(bench.embedder_command(job, extra_sets), env, timeout_s=timeout,
                                log_path=work / "job.log", on_tick=tick)
            poller.stop()
        finally:
            if cluster is not None:
                cluster.stop()
        series, t0 = poller.series, state["t0"]
        if t0 is None:
            print(bench.tail(run.log, 40))
            print("quota_use: the job made no request", file=sys.stderr)
            return 1
        if not run.interrupted:
            print(bench.tail(run.log, 20))
            print(f"quota_use: WARNING the job ended (exit {run.returncode}) before the measurement did: the "
                  "figures cover less than the requested time", file=sys.stderr)
        figures = summarise(series, t0, args)
        write_csv(csv_path, series, t0)
        where = f"{args.nodes} nodes" if args.nodes > 1 else "1 node"
        title = (f"Quota use on {where}: {args.tpm / 1e6:g}M TPM / {args.rpm} RPM / {args.max_concurrency} "
                 f"concurrent, ~{TOKENS_PER_WORD * args.words + 2:.0f}-token documents")
        plotted = plot(png_path, series, t0, args, figures, title)
        print(f"quota_use: burst minute: {figures['burst_tokens']:,.0f} tokens "
              f"({figures['burst_tokens'] / args.tpm:.2f} of a minute's quota)")
        print(f"quota_use: steady state ({figures['steady_minutes']:.1f} min): {figures['tokens_per_min']:,.0f} "
              f"tokens/min = {figures['tpm_ratio']:.3f} of the TPM limit; {figures['requests_per_min']:.0f} "
              f"requests/min = {figures['rpm_ratio']:.3f} of the RPM limit; binding limit: {figures['binding']}")
        print(f"FIGURE quota_use[{where}] achieved/limit = {figures['ratio']:.3f} (target >= 0.95) "
              f"{'OK' if figures['ratio'] >= 0.95 else 'MISSED'}")
        print(f"FIGURE quota_use[{where}] 429s per 100 requests = {figures['per_100']:.2f} "
              f"({figures['rate_limited']:.0f} of {figures['requests']:.0f}; whole run incl. burst "
              f"{figures['all_per_100']:.2f}) (target <= 1) {'OK' if figures['per_100'] <= 1 else 'MISSED'}")
        if cluster is not None:
            print(f"quota_use: embedding workers seen per node: {state['spread'] or 'unknown'}")
        print(f"quota_use: max concurrent requests seen by the server: {figures['max_concurrent_seen']}; job exit "
              f"{run.returncode} ({'stopped with Ctrl-C after the measurement' if run.interrupted else 'finished'})")
        print(f"quota_use: time series {csv_path}" + (f", plot {png_path}" if plotted else ""))
        if args.keep:
            print(f"quota_use: work directory kept at {work}")
    return 0


def workers_per_node(cluster: RayCluster, seen: dict[str, int]) -> dict[str, int]:
    """How many RayEmbedWorker processes run under each node's raylet (the most seen so far)."""
    import psutil

    counts = dict(seen)
    for number, pid in enumerate(cluster.raylet_pids(), start=1):
        try:
            children = psutil.Process(pid).children(recursive=True)
            count = 0
            for child in children:
                try:
                    if " ".join(child.cmdline()).startswith("ray::RayEmbedWorker"):
                        count += 1
                except psutil.Error:
                    continue
        except psutil.Error:
            continue
        counts[f"node{number}"] = max(counts.get(f"node{number}", 0), count)
    return counts


if __name__ == "__main__":
    sys.exit(main())
