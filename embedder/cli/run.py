"""``embedder run JOB.toml``: embed a corpus on Ray, resumably."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job file (TOML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a key of the job file (repeatable), e.g. --set limits.rpm=100")
    parser.add_argument("--restart", action="store_true",
                        help="start over: forget finished shards (needed when the job's fingerprint changed)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="embed again only the shards whose rows were dead-lettered by an earlier run")
    parser.add_argument("--incremental", action="store_true",
                        help="embed only new and changed rows against the last completed version of the output "
                             "(same as mode = \"incremental\" in the job file)")


def run(args: argparse.Namespace) -> int:
    from embedder.config import load_job
    from embedder.errors import ConfigError
    from embedder.run.job import RunOptions, run_job

    if args.restart and args.retry_failed:
        raise ConfigError("--restart and --retry-failed cannot be used together")
    config = load_job(args.job, args.overrides)
    return run_job(config, RunOptions(restart=args.restart, retry_failed=args.retry_failed,
                                      incremental=args.incremental))
