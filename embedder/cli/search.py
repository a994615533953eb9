"""``embedder search JOB.toml "query"``: embed a query and search the job's Milvus collection.

The query is embedded with the job's model and dimensions, as a query: ``retrieval.query`` when the documents
were embedded for retrieval (``retrieval.passage``, or no task given), otherwise the job's own task (symmetric
tasks such as ``text-matching`` embed both sides alike). The first Milvus sink of the job is searched.
``--hybrid`` also searches the raw query text with BM25 (a collection made with ``bm25 = true``) and fuses both
lists with RRF; ``--group-by-doc`` returns one hit per document; ``--json`` prints a JSON list of hits.

Milvus Lite lets one process open a database: while a job writes to it, this command fails with a message
saying so (serve the database with ``milvus-lite server`` to search during a run).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

SNIPPET_CHARS = 80
"""Passthrough values longer than this are cut in the text output (``--json`` prints them whole)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job file (TOML) whose Milvus sink is searched")
    parser.add_argument("query", help="the text to search for")
    parser.add_argument("-k", "--top-k", "--limit", dest="top_k", type=int, default=5, metavar="N",
                        help="number of results (default 5)")
    parser.add_argument("--filter", default="", metavar="EXPR",
                        help="Milvus boolean expression over passthrough fields, e.g. 'topic == \"sports\"'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a key of the job file (repeatable)")
    parser.add_argument("--group-by-doc", action="store_true",
                        help="one hit per document: its best chunk (a collection of chunks only)")
    parser.add_argument("--hybrid", action="store_true",
                        help="fuse the dense results with BM25 full-text results (RRF); needs a collection made "
                             "with store_text = true and bm25 = true")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of hits, each {rank, id, score, fields}")


def run(args: argparse.Namespace) -> int:
    from embedder.config import MilvusSinkConfig, load_job
    from embedder.errors import ConfigError

    if args.top_k < 1:
        raise ConfigError(f"-k must be at least 1, got {args.top_k}")
    config = load_job(args.job, args.overrides)
    sink = next((s for s in config.sinks if isinstance(s, MilvusSinkConfig)), None)
    if sink is None:
        raise ConfigError(f"{args.job} has no Milvus sink to search (add a [[sinks]] table with kind = \"milvus\")")
    from embedder.sinks.milvus_search import search

    # the query is embedded only once the collection has been found fit for the search
    hits = search(sink, lambda: embed_query(config, args.query), top_k=args.top_k, fields=config.source.passthrough,
                  expr=args.filter, group_by_doc=args.group_by_doc, hybrid_text=args.query if args.hybrid else None)
    if args.json:
        print(json.dumps(hits, ensure_ascii=False, default=str))
    else:
        print(format_hits(hits, "RRF" if args.hybrid else sink.metric))
    return 0


def query_task(task: str | None) -> str | None:
    """The task a query is embedded with, given the task the documents were embedded with."""
    return "retrieval.query" if task in (None, "retrieval.passage") else task


def embed_query(config: Any, text: str) -> list[float]:
    from embedder.jina.function import JinaEmbeddingFunction
    from embedder.run.settings import api_key_or_fail

    emb = config.embedding
    task = query_task(emb.task)
    function = JinaEmbeddingFunction(emb.model, api_key_or_fail(config).reveal(), task=task or "retrieval.query",
                                     dimensions=emb.dimensions, api_base=emb.api_base, timeout=emb.timeout_s,
                                     normalized=emb.normalized, truncate=True, embedding_type=emb.embedding_type,
                                     max_attempts=emb.max_retries + 1)
    with function:
        return [float(x) for x in function([text])[0]]


def format_hits(hits: list[dict], metric: str) -> str:
    if not hits:
        return "no results"
    better = "lower is closer" if metric == "L2" else "higher is closer"
    if metric == "RRF":  # fused ranks: the sum of 1 / (60 + rank) over the dense and the BM25 list
        better = "dense + BM25 fused by rank, higher is closer"
    lines = [f"{'rank':>4}  {'score':>8}  id  ({metric}, {better})"]
    for hit in hits:
        lines.append(f"{hit['rank']:>4}  {hit['score']:>8.4f}  {hit['id']}")
        for name, value in hit["fields"].items():
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            if len(shown) > SNIPPET_CHARS:
                shown = shown[:SNIPPET_CHARS - 1] + "…"
            lines.append(f"{'':>16}{name}: {shown}")
    return "\n".join(lines)
