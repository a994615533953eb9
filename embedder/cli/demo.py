"""``embedder demo``: the pymilvus-style function on a few texts, then a full job on a generated corpus.

With ``JINA_API_KEY`` set it talks to Jina's API (and spends tokens: a few hundred thousand at the default size);
without it, it starts the local Jina-compatible stand-in server and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

import numpy as np

DEMO_DOCS = [
    "Artificial intelligence was founded as an academic discipline in 1956.",
    "Alan Turing was the first person to conduct substantial research in AI.",
    "Born in Maida Vale, London, Turing was raised in southern England.",
]
DEMO_QUERIES = ["When was artificial intelligence founded", "Where was Alan Turing born?"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the generated corpus (default 50,000)")
    parser.add_argument("--workdir", default="demo-output", help="where the corpus, output and checkpoint go")
    parser.add_argument("--workers", type=int, default=2, help="embedding workers (default 2)")
    parser.add_argument("--restart", action="store_true", help="start the demo job over")


@contextlib.contextmanager
def api_endpoint() -> Iterator[None]:
    """The real API when a key is set; else the local stand-in server, announced as such."""
    if os.environ.get("JINA_API_KEY") or os.environ.get("JINAAI_API_KEY"):
        print(f"demo: using the Jina API at {os.environ.get('JINA_API_BASE', 'https://api.jina.ai/v1')} "
              "(JINA_API_KEY is set: this spends tokens)")
        yield
        return
    from embedder.mock_jina.testing import MockJinaServer

    with MockJinaServer(latency_ms=20) as server:
        print(f"demo: JINA_API_KEY is not set — using the LOCAL STAND-IN server at {server.url} "
              "(deterministic hashed vectors, not Jina's model)")
        saved = {name: os.environ.get(name) for name in ("JINA_API_KEY", "JINA_API_BASE")}
        os.environ["JINA_API_KEY"] = "jina_" + "demo" * 15
        os.environ["JINA_API_BASE"] = server.url
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def function_demo() -> None:
    from embedder.jina.function import JinaEmbeddingFunction

    with JinaEmbeddingFunction("jina-embeddings-v3", task="retrieval.passage", dimensions=1024) as ef:
        docs = ef.encode_documents(DEMO_DOCS)
        queries = ef.encode_queries(DEMO_QUERIES)
        print(f"demo: JinaEmbeddingFunction embedded {len(docs)} documents and {len(queries)} queries "
              f"(dim {ef.dim}, dtype {docs[0].dtype})")
        scores = np.vstack(queries) @ np.vstack(docs).T
        for query, row in zip(DEMO_QUERIES, scores, strict=True):
            best = int(np.argmax(row))
            print(f"demo:   {query!r} -> {DEMO_DOCS[best]!r} (score {row[best]:.3f})")


def job_demo(args: argparse.Namespace) -> int:
    from embedder.cli.sample_corpus import write_parquet_corpus
    from embedder.config import default_job
    from embedder.run.job import RunOptions, run_job

    corpus = os.path.join(args.workdir, "corpus")
    output = os.path.join(args.workdir, "embeddings")
    milvus_db = os.path.abspath(os.path.join(args.workdir, "milvus.db"))
    if not os.path.isdir(corpus):
        print(f"demo: generating a sample corpus of {args.rows:,} rows in {corpus}")
        write_parquet_corpus(corpus, args.rows)
    config = default_job(
        sinks=[{"kind": "parquet", "path": output},
               {"kind": "milvus", "uri": milvus_db, "collection": "demo"}],
        overrides=[f"source.path={corpus}", "source.passthrough=['title', 'topic']", "source.shard_rows=5000",
                   f"workers.count={args.workers}", "limits.rpm=500", "limits.tpm=5000000",
                   "limits.max_concurrency=8", f"checkpoint.path={os.path.join(output, '_checkpoint')}"])
    print(f"demo: embedding {corpus} into {output} (Parquet) and {milvus_db} (Milvus Lite) on a local Ray cluster")
    code = run_job(config, RunOptions(restart=args.restart), out=sys.stdout)
    if code != 0:
        return code
    search_demo(config, corpus)
    print(f"demo: done. Vectors are in {output} (read them with "
          f"embedder.sinks.parquet.read_manifest_dataset({output!r})) and in the Milvus Lite collection 'demo' at "
          f"{milvus_db}; the run report is in {config.checkpoint.path}")
    return 0


def search_demo(config, corpus: str) -> None:
    """Search the collection with one document's own text: that document should come first."""
    import pyarrow.dataset as ds

    from embedder.cli.search import embed_query, format_hits
    from embedder.config import MilvusSinkConfig
    from embedder.sinks.milvus_search import search

    sink = next(s for s in config.sinks if isinstance(s, MilvusSinkConfig))
    row = ds.dataset(corpus).head(1, columns=["id", "text"]).to_pylist()[0]
    hits = search(sink, embed_query(config, row["text"]), top_k=3, fields=("title", "topic"))
    print(f"demo: searching 'demo' with the text of {row['id']} ({row['text'][:60]}...):")
    print(format_hits(hits, sink.metric))


def run(args: argparse.Namespace) -> int:
    with api_endpoint():
        function_demo()
        return job_demo(args)
