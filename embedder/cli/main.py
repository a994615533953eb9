"""Turn a corpus of documents into embedding vectors with Jina AI's embeddings API, on a Ray cluster, into Parquet
files or a Milvus collection: within your rate limits, resumable after any interruption.

Start with `embedder plan JOB.toml` (what it will cost, no API call), then `embedder run JOB.toml`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from embedder.errors import EmbedderError

# subcommand -> (module with ``add_arguments(parser)`` and ``run(args) -> int``, help); a module is imported only
# when its subcommand runs or the parser is built, so `embedder status` never loads Ray or pymilvus
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("embedder.cli.run", "embed a corpus on Ray into Parquet or Milvus, resumably"),
    "plan": ("embedder.cli.plan", "files, rows, shards, tokens, cost and duration of a job, without API calls"),
    "status": ("embedder.cli.status", "progress of a job from its checkpoint ledger, also while it runs"),
    "demo": ("embedder.cli.demo", "embed a generated sample corpus end to end (local stand-in server without a key)"),
    "search": ("embedder.cli.search", "embed a query and search the job's Milvus collection"),
    "mock-jina": ("embedder.mock_jina.cli", "run the local Jina-compatible stand-in server (development only)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except EmbedderError as exc:
        if args.debug:
            raise
        print(f"embedder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embedder {args.command}: interrupted", file=sys.stderr)
        return 130
