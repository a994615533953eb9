"""Throughput of the local Jina-compatible server: vectors per second it can return.

    .venv/bin/python benchmarks/mock_server_throughput.py --requests 200 --inputs 256 --concurrency 4

Starts ``embedder mock-jina`` (no limits, no latency) in a subprocess, sends a bounded number of requests of
``--inputs`` texts of about ``--tokens`` tokens each from ``--concurrency`` concurrent async clients, and prints
vectors/s, requests/s and tokens/s. Bodies are built once up front so the client's own JSON work does not
hide the server's speed; responses are read fully and their status checked.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time

import httpx

from embedder.mock_jina.testing import MockJinaServer
from embedder.mock_jina.tokens import count_tokens


def make_texts(n: int, tokens: int, seed: int) -> list[str]:
    """Zipf-distributed words from a 20k vocabulary, so the server's word cache sees a realistic mix."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(20_000)]
    cum_weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))
    texts = []
    for _ in range(n):
        sentences: list[str] = []
        count = 2
        while count < tokens:  # count sentence by sentence: recounting the whole text would be quadratic
            sentences.append(" ".join(rng.choices(vocabulary, cum_weights=cum_weights, k=20)) + ".")
            count += count_tokens(sentences[-1]) - 2
        texts.append(" ".join(sentences))
    return texts


async def run(url: str, bodies: list[bytes], requests: int, concurrency: int) -> float:
    headers = {"Authorization": "Bearer jina_" + "b" * 60, "Content-Type": "application/json"}
    queue = itertools.islice(itertools.cycle(bodies), requests)  # bounded: exactly `requests` requests
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, trust_env=False, limits=limits) as client:

        async def worker() -> None:
            for body in queue:
                response = await client.post(f"{url}/embeddings", content=body, headers=headers)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--inputs", type=int, default=256, help="texts per request")
    parser.add_argument("--tokens", type=int, default=300, help="approximate tokens per text")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--embedding-type", default="base64", choices=["base64", "float"])
    args = parser.parse_args()

    texts = make_texts(args.inputs * 4, args.tokens, seed=0)
    bodies = [json.dumps({"model": "jina-embeddings-v3", "input": texts[i::4], "dimensions": args.dimensions,
                          "embedding_type": args.embedding_type, "normalized": True}).encode()
              for i in range(4)]
    tokens_per_request = sum(count_tokens(t) for t in texts) / 4
    with MockJinaServer() as server:
        elapsed = asyncio.run(run(server.url, bodies, args.requests, args.concurrency))
        stats = server.stats()
    assert stats["billed_requests"] == args.requests, stats
    vectors = args.requests * args.inputs
    print(f"mock-jina throughput: {vectors / elapsed:,.0f} vectors/s ({args.dimensions}-d, {args.embedding_type}), "
          f"{args.requests / elapsed:,.1f} requests/s, {args.requests * tokens_per_request / elapsed:,.0f} tokens/s "
          f"[{args.requests} requests x {args.inputs} inputs x ~{tokens_per_request / args.inputs:.0f} tokens, "
          f"concurrency {args.concurrency}, {elapsed:.1f} s]")


if __name__ == "__main__":
    main()
