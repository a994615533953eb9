"""Incremental backfill: time and tokens of an incremental run against a full run, after 1% edits/adds/deletes.

    .venv/bin/python benchmarks/incremental.py                    # 20,000 rows
    .venv/bin/python benchmarks/incremental.py --rows 100000      # full size

Embeds a corpus into Parquet against the local stand-in server (unthrottled), then edits 1% of the texts, deletes
1% of the rows and adds 1% new ones, and runs (a) the same job with ``--incremental`` and (b) a full run of the
changed corpus into a fresh output. Figures: tokens billed (per the server's /stats) and wall time of each, their
ratio (target: incremental tokens <= 2.5% of the full run's), and whether both outputs hold the same ids and
vectors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as bench

from embedder.cli.sample_corpus import generate_rows
from embedder.mock_jina.testing import MockJinaServer
from embedder.sinks.parquet import read_manifest_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def change(source: Path, target: Path, rows: int, words: int, rng: np.random.Generator) -> dict[str, int]:
    """Copy the corpus with 1% of texts edited, 1% of rows deleted and 1% added."""
    target.mkdir(parents=True)
    counts = {"edited": 0, "deleted": 0, "added": 0}
    files = sorted(source.glob("*.parquet"))
    per_file = max(1, rows // 100 // len(files))
    for number, path in enumerate(files):
        table = pq.read_table(path)
        picks = rng.choice(table.num_rows, size=2 * per_file, replace=False)
        texts = table["text"].to_pylist()
        for i in picks[:per_file]:
            texts[i] += " (edited)"
        keep = np.ones(table.num_rows, dtype=bool)
        keep[picks[per_file:]] = False
        table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)).filter(keep)
        added = generate_rows(per_file, start=10**9 + number * per_file, words_per_doc=words).select(table.column_names)
        pq.write_table(pa.concat_tables([table, added]), target / path.name, row_group_size=5000)
        counts["edited"] += per_file
        counts["deleted"] += per_file
        counts["added"] += per_file
    return counts


def vectors(output: Path) -> dict[str, bytes]:
    table = read_manifest_dataset(str(output)).to_table(columns=["id", "vector"])
    flat = table["vector"].combine_chunks().flatten().to_numpy()
    size = flat.size // max(1, table.num_rows)
    return {key: flat[i * size:(i + 1) * size].tobytes() for i, key in enumerate(table["id"].to_pylist())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.print_machine()
    original = bench.corpus(args.rows, args.words)
    with bench.workdir(args.keep, "incremental-") as work, MockJinaServer() as server:
        corpus = work / "corpus"
        shutil.copytree(original, corpus, ignore=shutil.ignore_patterns(".complete"))
        env = bench.job_env(server.url)

        def job(name: str, output: Path) -> list[str]:
            path = bench.job_file(work / f"{name}.toml", source=corpus, output=output, rpm=10_000_000, tpm=10**12,
                                  max_concurrency=8, workers=args.workers, dimensions=args.dimensions)
            return bench.embedder_command(path)

        def run(name: str, command: list[str]) -> tuple[float, int]:
            server.reset()
            result = bench.run_job(command, env, timeout_s=3600, log_path=work / f"{name}.log")
            if result.returncode != 0:
                print(bench.tail(result.log, 30))
                raise SystemExit(f"incremental: the {name} run failed with exit code {result.returncode}")
            tokens = server.stats()["tokens"]
            print(f"incremental: {name}: {result.wall_s:.1f} s, {tokens:,} tokens billed", flush=True)
            return result.wall_s, tokens

        run("first full run", job("first", work / "out"))
        changed = work / "changed"
        counts = change(corpus, changed, args.rows, args.words, np.random.default_rng(1))
        shutil.rmtree(corpus)
        changed.rename(corpus)
        print(f"incremental: changed the corpus: {counts}", flush=True)
        inc_wall, inc_tokens = run("incremental run", [*job("first", work / "out"), "--incremental"])
        full_wall, full_tokens = run("full run of the changed corpus", job("fresh", work / "fresh"))
        same = vectors(work / "out") == vectors(work / "fresh")
    ratio = inc_tokens / full_tokens if full_tokens else float("nan")
    print(f"FIGURE incremental tokens / full-run tokens = {ratio:.4f} ({inc_tokens:,} / {full_tokens:,}) at "
          f"{args.rows:,} rows (target <= 0.025) {'OK' if ratio <= 0.025 else 'MISSED'}")
    print(f"FIGURE incremental wall time = {inc_wall:.1f} s vs full run {full_wall:.1f} s "
          f"(ratio {inc_wall / full_wall:.2f})")
    print(f"FIGURE incremental output equals the full run's (ids and vectors) = {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
