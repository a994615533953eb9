"""Planning a job without any API call: files, shards, rows; documents, chunks, tokens, requests, cost and time
estimated from a sample.

The sample is a few shards spread over the plan (the first one always: its rows tell the schema the sinks get).
With chunking the sampled documents are chunked — the same splitter as the run — and the figures scaled to the
whole input; the corpus itself is never chunked here. Tokens are the job's estimate (characters ÷
``embedding.chars_per_token``); a run measures the real figure from what the API bills.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from embedder.config import JobConfig
from embedder.errors import InputError
from embedder.jina.embedding import DEFAULT_MAX_TOKENS_PER_REQUEST
from embedder.jina.windows import SPECIAL_TOKENS_PER_INPUT, plan_document
from embedder.source.documents import build_documents
from embedder.source.files import SourceFile, discover_files
from embedder.source.reader import read_shard
from embedder.source.shards import Shard, plan_shards

SAMPLE_SHARDS = 4
"""Shards read for the estimate, spread over the plan."""
SAMPLE_ROWS = 2000
"""Rows of the sample that are measured (and chunked)."""


@dataclass
class Estimate:
    """What the whole input should take, scaled from the sample."""

    documents: int
    chunks: int
    tokens: int
    requests: int
    mean_chars: float
    """Characters per input row in the sample."""


@dataclass
class JobPlan:
    files: list[SourceFile]
    shards: list[Shard]
    rows: int
    sample: pa.Table
    """Rows of the first shard: the schema of what the workers will read."""
    sample_rows: int
    estimate: Estimate
    estimated_cost_usd: float
    estimated_minutes: float
    binding_limit: str

    def summary(self) -> dict:
        e = self.estimate
        return {"files": len(self.files), "shards": len(self.shards), "rows": self.rows,
                "sample_rows": self.sample_rows, "mean_chars_per_row": round(e.mean_chars, 1),
                "estimated_documents": e.documents, "estimated_chunks": e.chunks,
                "estimated_tokens": e.tokens, "estimated_requests": e.requests,
                "estimated_cost_usd": round(self.estimated_cost_usd, 4),
                "estimated_minutes": round(self.estimated_minutes, 2), "binding_limit": self.binding_limit}


def plan_digest(shard_ids: Iterable[str]) -> str:
    """A stable name for a set of shards in plan order: equal digests, the same input unchanged."""
    return hashlib.sha256("\n".join(shard_ids).encode()).hexdigest()


def build_plan(config: JobConfig) -> JobPlan:
    """Discover files and plan shards from metadata; read a few shards for the schema and the estimate."""
    storage_options = config.storage_options
    files = discover_files(config.source.path, config.source.format, storage_options=storage_options)
    shards = plan_shards(files, config.source.shard_rows, storage_options=storage_options)
    rows = sum(shard.row_count for shard in shards)
    if not shards:
        raise InputError(f"input is empty: {config.source.path} has {len(files)} file(s) and no rows")
    picked = sorted({round(k * (len(shards) - 1) / max(1, SAMPLE_SHARDS - 1)) for k in range(SAMPLE_SHARDS)})
    tables = [read_shard(shards[0], config.source, storage_options=storage_options)]
    for k in picked[1:]:
        # only the first shard must read here (it tells the schema); a problem in another one is reported, naming
        # its file and row, when that shard is embedded, after the shards before it are kept
        with contextlib.suppress(InputError):
            tables.append(read_shard(shards[k], config.source, storage_options=storage_options))
    per_shard = max(1, SAMPLE_ROWS // len(tables))
    sample = pa.concat_tables([t.slice(0, per_shard) for t in tables], promote_options="permissive")
    estimate = _estimate(config, sample, rows)
    limits = config.limits
    by_tokens, by_requests = estimate.tokens / limits.tpm, estimate.requests / limits.rpm
    return JobPlan(files=files, shards=shards, rows=rows, sample=tables[0], sample_rows=sample.num_rows,
                   estimate=estimate, estimated_cost_usd=estimate.tokens / 1e6 * limits.price_per_million_tokens,
                   estimated_minutes=max(by_tokens, by_requests),
                   binding_limit="tpm" if by_tokens >= by_requests else "rpm")


def _estimate(config: JobConfig, sample: pa.Table, rows: int) -> Estimate:
    emb = config.embedding
    documents = build_documents(sample, config)
    lengths = [len(text or "") for text in documents.texts]
    scale = rows / max(1, sample.num_rows)
    chunks = len(lengths) * scale
    tokens = (sum(lengths) / emb.chars_per_token + SPECIAL_TOKENS_PER_INPUT * len(lengths)) * scale
    if emb.late_chunking:  # a request per window of one document
        windows = sum(len(plan_document(lengths[start:end], chars_per_token=emb.chars_per_token,
                                        budget=emb.effective_window_tokens, overlap=emb.window_overlap_chunks,
                                        max_inputs=emb.effective_batch_size).groups)
                      for start, end in documents.ranges())
        requests = math.ceil(windows * scale)
    else:
        per_request = emb.max_tokens_per_request or DEFAULT_MAX_TOKENS_PER_REQUEST
        requests = max(math.ceil(chunks / emb.effective_batch_size), math.ceil(tokens / per_request))
    mean_chars = sum(len(text or "") for text in sample.column("text").to_pylist()) / max(1, sample.num_rows)
    return Estimate(documents=round(documents.count * scale), chunks=round(chunks), tokens=int(tokens),
                    requests=requests, mean_chars=mean_chars)


def format_plan(plan: JobPlan, config: JobConfig) -> str:
    s = plan.summary()
    limits, per_token = config.limits, config.embedding.chars_per_token
    lines = [
        f"files            {s['files']}",
        f"rows             {s['rows']:,}",
        f"shards           {s['shards']:,} (about {config.source.shard_rows:,} rows each)",
        f"sample           {s['sample_rows']:,} rows, {s['mean_chars_per_row']:,} characters per row on average",
    ]
    if config.documents:
        lines.append(f"documents (est.) {s['estimated_documents']:,} in {s['estimated_chunks']:,} chunks")
    lines += [
        f"tokens (est.)    {s['estimated_tokens']:,} (at {per_token:g} characters per token; "
        f"the run measures the real figure)",
        f"requests (est.)  {s['estimated_requests']:,}",
        f"cost (est.)      ${s['estimated_cost_usd']:,.4f} at ${limits.price_per_million_tokens:g} per million tokens",
        f"duration (est.)  {s['estimated_minutes']:,.1f} min at {limits.rpm:,} requests/min and {limits.tpm:,} "
        f"tokens/min ({s['binding_limit']} binds)",
    ]
    return "\n".join(lines)
