"""embedder turns a corpus of documents (Parquet, JSON Lines, CSV or Arrow files; local, S3 or GCS) into embedding
vectors with Jina AI's embeddings API, on a local or remote Ray cluster, into Parquet files and/or a Milvus
collection. It keeps within your rate limits, resumes after any interruption without paying twice, dead-letters
the rows it cannot embed, and with --incremental embeds only what changed.

A first run:
  embedder sample-corpus data/sample          # a generated sample corpus
  embedder plan jobs/configs/laptop.toml      # files, rows, tokens, cost and duration; no API call
  embedder run jobs/configs/laptop.toml       # embed (JINA_API_KEY from the environment); rerun to resume
  embedder status out/embeddings/_checkpoint  # progress, also while it runs

The output is quiet: --debug shows every request, the libraries' logs and full tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from embedder.errors import EmbedderError

# subcommand -> (module with ``add_arguments(parser)`` and ``run(args) -> int``, help); a module is imported only
# when its subcommand runs or the parser is built, so `embedder status` never loads Ray or pymilvus
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("embedder.cli.run", "embed a corpus on Ray into Parquet or Milvus, resumably"),
    "plan": ("embedder.cli.plan", "files, rows, shards, tokens, cost and duration of a job, without API calls"),
    "status": ("embedder.cli.status", "progress of a job from its checkpoint ledger, also while it runs"),
    "search": ("embedder.cli.search", "embed a query and search the job's Milvus collection"),
    "sample-corpus": ("embedder.cli.sample", "write the generated sample corpus the examples use (data/sample)"),
    "demo": ("embedder.cli.demo", "embed a generated sample corpus end to end (local stand-in server without a key)"),
    "mock-jina": ("embedder.mock_jina.cli", "run the local Jina-compatible stand-in server (development only)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show debug logs (every request), third-party logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from embedder.run.quiet import configure

    configure(args.debug)  # before Ray, gRPC or Milvus Lite is imported: they read their levels at start
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
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback only on request
        if args.debug:
            raise
        print(f"embedder {args.command}: unexpected error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
