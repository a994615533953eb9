"""``embedder sample-corpus DIR``: write the generated sample corpus the README's examples and the laptop job use."""

from __future__ import annotations

import argparse
import os

DEFAULT_ROWS = 2_000
"""Small enough to embed in seconds (about 350,000 tokens, $0.02 at Jina's list price), big enough to show a run."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="where to write the Parquet files (e.g. data/sample)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"documents to generate (default {DEFAULT_ROWS:,})")
    parser.add_argument("--files", type=int, default=2, help="Parquet files to spread them over (default 2)")
    parser.add_argument("--words", type=int, default=120, help="average words per document (default 120)")


def run(args: argparse.Namespace) -> int:
    from embedder.cli.sample_corpus import write_parquet_corpus
    from embedder.errors import ConfigError

    if args.rows < 1 or args.files < 1 or args.words < 2:
        raise ConfigError("--rows and --files must be at least 1, --words at least 2")
    existing = [name for name in os.listdir(args.directory) if name.endswith(".parquet")] \
        if os.path.isdir(args.directory) else []
    if existing:
        raise ConfigError(f"{args.directory} already holds {len(existing)} Parquet file(s); remove them first or "
                          "choose another directory (a job reads every file under it)")
    paths = write_parquet_corpus(args.directory, args.rows, files=args.files, words_per_doc=args.words)
    print(f"embedder: wrote {args.rows:,} generated documents (columns id, title, topic, text) to "
          f"{len(paths)} Parquet file(s) in {args.directory}")
    return 0
