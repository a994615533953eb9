"""A deterministic synthetic corpus for the demo, the tests and the benchmarks (no download needed)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = {
    "astronomy": "star galaxy orbit telescope planet comet nebula light-year gravity moon solar eclipse",
    "cooking": "recipe oven flour butter simmer spice garlic onion roast bake sauce kitchen",
    "finance": "market stock bond interest rate inflation dividend portfolio bank loan credit",
    "medicine": "patient doctor vaccine symptom diagnosis therapy hospital clinical dose virus",
    "sports": "match goal team player coach season league score referee stadium training",
    "computing": "server database network algorithm compiler memory cluster python query cache",
}
FILLER = (
    "the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from", "that",
    "this", "it", "be", "are", "which", "has", "had", "an", "not", "or", "have", "were", "but", "their",
    "more", "about", "after", "can", "new", "also", "first", "two", "when", "there", "one", "into",
)


def generate_rows(count: int, *, start: int = 0, words_per_doc: int = 120, seed: int = 42) -> pa.Table:
    """``count`` documents with ids ``doc-<n>``: a topic-flavoured text of about ``words_per_doc`` words."""
    rng = np.random.default_rng(seed + start)
    topic_names = list(TOPICS)
    topic_words = [TOPICS[name].split() for name in topic_names]
    ids, titles, texts, topics = [], [], [], []
    for n in range(start, start + count):
        topic = int(rng.integers(len(topic_names)))
        length = int(rng.integers(words_per_doc // 2, words_per_doc * 3 // 2))
        vocab = topic_words[topic]
        picks = rng.random(length) < 0.45
        words = [vocab[int(i)] if pick else FILLER[int(j)] for pick, i, j in
                 zip(picks, rng.integers(len(vocab), size=length), rng.integers(len(FILLER), size=length),
                     strict=True)]
        ids.append(f"doc-{n:08d}")
        titles.append(f"{topic_names[topic].title()} note {n}")
        texts.append(" ".join(words).capitalize() + ".")
        topics.append(topic_names[topic])
    return pa.table({"id": ids, "title": titles, "topic": topics, "text": texts})


def write_parquet_corpus(directory: str, rows: int, *, files: int = 4, row_group_rows: int = 5000,
                         words_per_doc: int = 120, seed: int = 42) -> list[str]:
    """Write ``rows`` documents over ``files`` Parquet files; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths, start = [], 0
    per_file = -(-rows // files)
    for number in range(files):
        count = min(per_file, rows - start)
        if count <= 0:
            break
        path = os.path.join(directory, f"part-{number:04d}.parquet")
        pq.write_table(generate_rows(count, start=start, words_per_doc=words_per_doc, seed=seed), path,
                       row_group_size=row_group_rows)
        paths.append(path)
        start += count
    return paths


def generate_documents(count: int, *, min_tokens: int = 300, max_tokens: int = 30_000, start: int = 0,
                       seed: int = 7) -> pa.Table:
    """``count`` long documents (ids ``doc-<n>``) of ``min_tokens`` to ``max_tokens`` tokens (about 4 characters
    each, spread log-uniformly): paragraphs of topic-flavoured sentences separated by blank lines."""
    rng = np.random.default_rng(seed + start)
    topic_names = list(TOPICS)
    ids, titles, texts, topics = [], [], [], []
    for n in range(start, start + count):
        topic = int(rng.integers(len(topic_names)))
        target = 4 * float(np.exp(rng.uniform(np.log(min_tokens), np.log(max_tokens))))
        vocab = TOPICS[topic_names[topic]].split()
        paragraphs: list[str] = []
        size = 0
        while size < target:
            sentences = [_sentence(rng, vocab) for _ in range(int(rng.integers(2, 9)))]
            paragraphs.append(" ".join(sentences))
            size += len(paragraphs[-1]) + 2
        ids.append(f"doc-{n:06d}")
        titles.append(f"{topic_names[topic].title()} report {n}")
        texts.append("\n\n".join(paragraphs))
        topics.append(topic_names[topic])
    return pa.table({"id": ids, "title": titles, "topic": topics, "text": texts})


def _sentence(rng: np.random.Generator, vocab: list[str]) -> str:
    length = int(rng.integers(8, 26))
    picks = rng.random(length) < 0.45
    words = [vocab[int(i)] if pick else FILLER[int(j)] for pick, i, j in
             zip(picks, rng.integers(len(vocab), size=length), rng.integers(len(FILLER), size=length), strict=True)]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])
