"""``embedder plan JOB.toml``: rows, shards, tokens, cost and duration — without any API call."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job file (TOML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from embedder.config import load_job
    from embedder.source.planning import build_plan, format_plan

    config = load_job(args.job, args.overrides)
    plan = build_plan(config)
    if args.json:
        print(json.dumps(plan.summary()))
    else:
        print(format_plan(plan, config))
    return 0
