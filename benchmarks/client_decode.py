"""Decode speed of the client: base64 vs float JSON responses, vectors/s at 1024 dimensions.

    python benchmarks/client_decode.py [--vectors 2048] [--dimensions 1024] [--repeat 5]

Builds one real response body of each kind (as the API sends it) and times ``decode_response`` on it, in one run,
so the ratio is measured side by side. Also prints the body sizes.
"""

from __future__ import annotations

import argparse
import base64
import json
import time

import numpy as np

from embedder.jina.client import EmbedOptions, decode_response


def body(vectors: np.ndarray, kind: str) -> bytes:
    data = []
    for index, vector in enumerate(vectors):
        embedding = base64.b64encode(vector.astype("<f4").tobytes()).decode() if kind == "base64" \
            else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return json.dumps({"model": "jina-embeddings-v3", "object": "list", "data": data,
                       "usage": {"total_tokens": 1, "prompt_tokens": 1}}).encode()


def best_rate(content: bytes, count: int, options: EmbedOptions, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        decode_response(content, count, options)
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=2048)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    vectors = np.random.default_rng(0).standard_normal((args.vectors, args.dimensions)).astype(np.float32)
    options = EmbedOptions(dimensions=args.dimensions)
    rates = {}
    for kind in ("base64", "float"):
        content = body(vectors, kind)
        rates[kind] = best_rate(content, args.vectors, options, args.repeat)
        print(f"{kind:7s} body {len(content) / 1e6:7.2f} MB  decode {rates[kind]:12,.0f} vectors/s")
    print(f"base64 / float decode speed: {rates['base64'] / rates['float']:.1f}x")


if __name__ == "__main__":
    main()
