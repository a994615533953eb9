"""Text splitters compared for chunking: exact offsets, coverage, determinism, boundary quality and speed.

    .venv/bin/python benchmarks/splitters.py               # what is installed (semantic-text-splitter always)
    .venv/bin/pip install semchunk chonkie langchain-text-splitters   # to compare all four, as docs/chunking.md
    .venv/bin/python benchmarks/splitters.py --docs 150 --repeat 7

A generated corpus of English-like documents of 300 to 30,000 tokens (paragraphs, sentences of 8-25 words, a few
very long paragraphs and run-on sentences, a few documents with accents, emoji and CJK), chunked at 2,000 characters
with overlap 0 and 200, on one pinned core (CPU time, median of interleaved repetitions). Columns: MB/s and chunks/s;
where chunk ends fall (paragraph end / other sentence end / other word boundary / inside a word); chunks over the
size; violations of exact offsets (R1), of coverage and order (R2), of overlap (ovlBad); and R4: the same spans in
two fresh processes with other hash seeds.
"""

import argparse
import gc
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # Rust libs: no thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if hasattr(os, "sched_setaffinity"):  # measure on ONE core
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

from importlib.metadata import PackageNotFoundError, version

from semantic_text_splitter import TextSplitter

try:
    import semchunk
except ImportError:
    semchunk = None
try:
    from chonkie import RecursiveChunker, SentenceChunker, TokenChunker
except ImportError:
    RecursiveChunker = SentenceChunker = TokenChunker = None
try:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
except ImportError:
    RecursiveCharacterTextSplitter = None

SIZE, OVERLAPS = 2000, (0, 200)
REPS = 7


# ---------------------------------------------------------------- corpus
def make_corpus(n_docs=150, seed=1234):
    rng = random.Random(seed)
    latin, accents, cjk = (
        "abcdefghijklmnopqrstuvwxyz",
        "éèàâüöäçñåøßí",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自可天",
    )

    def word(uni):
        r = rng.random()
        if uni and r < 0.04:
            return "".join(rng.choice(cjk) for _ in range(rng.randint(2, 4)))
        if uni and r < 0.05:
            return rng.choice("😀🚀🎉👍")
        w = [rng.choice(latin) for _ in range(rng.randint(2, 10))]
        if uni and r < 0.15:
            w[rng.randrange(len(w))] = rng.choice(accents)
        return "".join(w)

    def sentence(uni, n_words=None):
        ws = [word(uni) for _ in range(n_words or rng.randint(8, 25))]
        ws = [w + "," if rng.random() < 0.06 else w for w in ws[:-1]] + ws[-1:]
        s = " ".join(ws)
        return s[0].upper() + s[1:] + rng.choice("....?!")

    docs = []
    for i in range(n_docs):
        uni, long_par, run_on = i % 15 == 7, i % 10 == 3, i % 50 == 21
        target = 4 * round(math.exp(rng.uniform(math.log(300), math.log(30000))))  # chars
        paras = []
        while sum(map(len, paras)) < target:
            if long_par and len(paras) == 3:  # one very long paragraph (> chunk size)
                paras.append(" ".join(sentence(uni) for _ in range(rng.randint(40, 150))))
            elif run_on and len(paras) == 2:  # one run-on sentence (> chunk size)
                paras.append(sentence(uni, rng.randint(500, 700)))
            else:
                paras.append(" ".join(sentence(uni) for _ in range(rng.randint(2, 8))))
        docs.append("\n\n".join(paras) + "\n")
    return docs


# ---------------------------------------------------------------- splitters
# Each factory(size, overlap) returns f(text) -> [(start, end, chunk_text_as_returned)], or None if unsupported.
def sts(size, ov):
    sp = TextSplitter(size, overlap=ov)  # trim=True (default)
    return lambda t: [(s, s + len(c), c) for s, c in sp.chunk_indices(t)]


def semchunk_(size, ov):
    def split(t):
        chunks, offsets = semchunk.chunk(t, size, len, offsets=True, overlap=ov or None, memoize=False)
        return [(s, e, c) for c, (s, e) in zip(chunks, offsets, strict=True)]

    return split


def chonkie_(cls, **kw):
    def factory(size, ov):
        if ov and cls is RecursiveChunker:
            return None  # no chunk_overlap parameter
        extra = {"chunk_overlap": ov} if cls is not RecursiveChunker else {}
        ch = cls(tokenizer="character", chunk_size=size, **extra, **kw)
        return lambda t: [(c.start_index, c.end_index, c.text) for c in ch.chunk(t)]

    return factory


def langchain_(**kw):
    def factory(size, ov):
        sp = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=ov, add_start_index=True, **kw)
        return lambda t: [
            (d.metadata["start_index"], d.metadata["start_index"] + len(d.page_content), d.page_content)
            for d in sp.create_documents([t])
        ]

    return factory


SPLITTERS = {"semantic-text-splitter": sts}
if semchunk is not None:
    SPLITTERS["semchunk"] = semchunk_
if RecursiveChunker is not None:
    SPLITTERS.update(
        {
            "chonkie Recursive": chonkie_(RecursiveChunker),
            "chonkie Sentence": chonkie_(SentenceChunker),
            "chonkie Token": chonkie_(TokenChunker),
        }
    )
if RecursiveCharacterTextSplitter is not None:
    SPLITTERS.update(
        {
            "langchain Recursive": langchain_(),
            "langchain Rec.+sent.": langchain_(
                separators=["\n\n", "\n", ". ", "? ", "! ", " ", ""], keep_separator="end"
            ),
        }
    )
CONFIGS = [(name, ov, f) for ov in OVERLAPS for name, fac in SPLITTERS.items() if (f := fac(SIZE, ov))]


def _version(package):
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- checks
def end_kind(t, e):
    """Classify a chunk end: para / sent / word / mid (inside a word)."""
    k, m = e, e
    while k > 0 and t[k - 1].isspace():
        k -= 1
    while m < len(t) and t[m].isspace():
        m += 1
    if k == m:
        return "mid"
    if "\n\n" in t[k:m]:
        return "para"
    return "sent" if t[k - 1] in ".?!" else "word"


def quality(docs, f, ov, size=SIZE):
    q = dict(n=0, r1=0, r2=0, ovl_bad=0, over=0, maxlen=0, starts_mid=0, ovl=[], para=0, sent=0, word=0, mid=0)
    for t in docs:
        spans = f(t)
        q["n"] += len(spans)
        q["r2"] += bool(spans and (t[: spans[0][0]].strip() or t[spans[-1][1] :].strip())) or not spans
        for i, (s, e, c) in enumerate(spans):
            q["r1"] += t[s:e] != c
            q["r2"] += not c.strip()  # blank chunk
            q["over"] += len(c) > size
            q["maxlen"] = max(q["maxlen"], len(c))
            q["starts_mid"] += 0 < s < len(t) and not t[s - 1].isspace() and not t[s].isspace()
            if i + 1 < len(spans):
                s2, e2 = spans[i + 1][:2]
                q["r2"] += s2 <= s or e2 <= e or (s2 > e and bool(t[e:s2].strip()))  # order, redundant, dropped text
                if s2 < e:
                    q["ovl"].append(e - s2)
                    q["ovl_bad"] += (ov == 0) or e - s2 > ov  # overlap not asked for / too large
                q[end_kind(t, e)] += 1
    return q


EDGE_TEXTS = {  # small tricky texts, checked with size 50 / overlap 0 and 10
    "ws+CRLF": "  \n\n  Leading blank lines.\r\nCRLF line two.\r\n\r\n\tTabbed\u00a0nbsp para here.  \n\n  " * 6,
    "combining+ZWJ": "Cafe\u0301 naïve 👩‍👩‍👧‍👦 family 🇫🇷 flag Ångström e\u0301te\u0301. " * 12,
    "CJK no spaces": "日本語の文章です。これはテストです！長い文が続きます？" * 15,
    "repeated paras": "Same short sentence here.\n\n" * 40,
    "long word": "start " + "x" * 180 + " end. " + "y" * 75,
}


def edge_table():
    print("--- edge cases (size 50): R1 / R2 / >size violations per text, overlap 0 | 10 ---")
    print(f"{'library':24}" + "".join(f"{k:>22}" for k in EDGE_TEXTS))
    for name, fac in SPLITTERS.items():
        cells = []
        for t in EDGE_TEXTS.values():
            r = []
            for ov in (0, 10):
                f = fac(50, ov)
                if f is None:
                    r.append("n/a")
                    continue
                try:
                    q = quality([t], f, ov, 50)
                    r.append(f"{q['r1']}/{q['r2']}/{q['over']}")
                except Exception as e:
                    r.append(type(e).__name__[:9])
            cells.append(" | ".join(r))
        print(f"{name:24}" + "".join(f"{c:>22}" for c in cells))
    print()


def digest(docs, f):
    h = hashlib.sha256()
    for t in docs:
        h.update(json.dumps([(s, e) for s, e, _ in f(t)]).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- main
def main():
    global REPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=150, help="documents in the corpus (default 150)")
    parser.add_argument("--repeat", type=int, default=REPS, help="interleaved timing runs (median reported)")
    parser.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    REPS = args.repeat
    docs = make_corpus(args.docs)
    if args.digest:
        print(json.dumps({f"{n}|{ov}": digest(docs, f) for n, ov, f in CONFIGS}))
        return

    nchars = sum(map(len, docs))
    mb = sum(len(t.encode()) for t in docs) / 1e6
    print(
        "versions: "
        + ", ".join(
            f"{p} {_version(p)}" for p in ["semantic-text-splitter", "semchunk", "chonkie", "langchain-text-splitters"]
        )
        + f"; python {sys.version.split()[0]}"
    )
    print(
        f"corpus: {len(docs)} docs, {nchars:,} chars ({mb:.2f} MB utf-8), doc length {min(map(len, docs)):,}"
        f"..{max(map(len, docs)):,} chars, {sum(any(ord(ch) > 127 for ch in t) for t in docs)} docs with non-ASCII;"
        f" chunk size {SIZE} chars\n"
    )

    edge_table()
    # determinism: two fresh processes with different hash seeds must reproduce this process's spans
    mine = {f"{n}|{ov}": digest(docs, f) for n, ov, f in CONFIGS}
    others = [
        json.loads(
            subprocess.run(
                [sys.executable, __file__, "--digest", "--docs", str(args.docs)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": str(seed)},
            ).stdout
        )
        for seed in (1, 2)
    ]

    # speed: interleaved repetitions, CPU time of this single-core process, median
    times = {(n, ov): [] for n, ov, _ in CONFIGS}
    for _ in range(REPS):
        for n, ov, f in CONFIGS:
            fresh = [(t + " ")[:-1] for t in docs]  # new str objects: no cached UTF-8 copy from an earlier run
            gc.collect()
            t0 = time.process_time()
            for t in fresh:
                f(t)
            times[n, ov].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    for ov in OVERLAPS:
        fastest = min(v for (n, o), v in med.items() if o == ov)
        print(f"=== overlap {ov} ===")
        print(
            f"{'library':24}{'MB/s':>7}{'chunks/s':>10}{'x slower':>9}{'chunks':>8}{'para%':>7}{'sent%':>7}{'word%':>7}"
            f"{'mid%':>6}{'midSt':>6}{'>size':>6}{'max':>6}{'ovl avg/max':>12}{'R1':>4}{'R2':>4}{'ovlBad':>7}{'R4':>5}"
        )
        for n, o, f in CONFIGS:
            if o != ov:
                continue
            q, k = quality(docs, f, ov), f"{n}|{ov}"
            ends = max(1, q["para"] + q["sent"] + q["word"] + q["mid"])
            ovl = f"{statistics.mean(q['ovl']):.0f}/{max(q['ovl'])}" if q["ovl"] else "-"
            print(
                f"{n:24}{mb / med[n, ov]:7.2f}{q['n'] / med[n, ov]:10.0f}{med[n, ov] / fastest:9.1f}{q['n']:8}"
                + "".join(f"{100 * q[c] / ends:7.1f}" for c in ("para", "sent", "word"))
                + f"{100 * q['mid'] / ends:6.1f}{q['starts_mid']:6}{q['over']:6}{q['maxlen']:6}{ovl:>12}"
                f"{q['r1']:4}{q['r2']:4}{q['ovl_bad']:7}{'ok' if all(o_[k] == mine[k] for o_ in others) else 'DIFF':>5}"
            )
            print(
                f"FIGURE splitter {n} overlap {ov}: {mb / med[n, ov]:.1f} MB/s, {q['n'] / med[n, ov]:,.0f} chunks/s, "
                f"{100 * q['mid'] / ends:.1f}% ends inside a word, {q['r1'] + q['r2'] + q['ovl_bad']} violations"
            )
        print()
    print(
        "MB/s, chunks/s: median of",
        REPS,
        "interleaved runs, CPU time on one pinned core; 'x slower' = time / fastest in same table.\n"
        "para/sent/word/mid%: where non-final chunk ends fall (paragraph end, other sentence end, other word\n"
        "boundary, inside a word); midSt: chunk starts inside a word; >size: chunks longer than",
        SIZE,
        "chars; max: longest chunk.\n"
        "R1: chunks with text[start:end] != chunk; R2: dropped non-whitespace / out-of-order or redundant\n"
        "(inside previous) / blank chunks; ovlBad: overlap when 0 was asked, or larger than asked;\n"
        "R4: spans identical in 2 fresh processes (other hash seeds).",
    )


if __name__ == "__main__":
    main()
