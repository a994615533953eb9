"""Planning a job without any API call: files, shards, rows, a token estimate from a sample, cost and time."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedder.config import JobConfig
from embedder.errors import InputError
from embedder.jina.embedding import DEFAULT_MAX_TOKENS_PER_REQUEST
from embedder.jina.models import model_spec
from embedder.source.files import SourceFile, discover_files
from embedder.source.reader import read_shard
from embedder.source.shards import Shard, plan_shards

PLAN_CHARS_PER_TOKEN = 4.0
"""Characters per token assumed by ``plan`` (no tokenizer here); English text under XLM-RoBERTa is near this.
A run measures the real figure from what the API bills."""
SAMPLE_ROWS = 2000


@dataclass
class JobPlan:
    files: list[SourceFile]
    shards: list[Shard]
    rows: int
    sample: pa.Table
    """Rows of the first shard: the schema of what the workers will read, and the token estimate's basis."""
    mean_chars: float
    estimated_tokens: int
    estimated_requests: int
    estimated_cost_usd: float
    estimated_minutes: float
    binding_limit: str

    def summary(self) -> dict:
        return {"files": len(self.files), "shards": len(self.shards), "rows": self.rows,
                "sample_rows": self.sample.num_rows, "mean_chars_per_row": round(self.mean_chars, 1),
                "estimated_tokens": self.estimated_tokens, "estimated_requests": self.estimated_requests,
                "estimated_cost_usd": round(self.estimated_cost_usd, 4),
                "estimated_minutes": round(self.estimated_minutes, 2), "binding_limit": self.binding_limit}


def plan_digest(shard_ids: Iterable[str]) -> str:
    """A stable name for a set of shards in plan order: equal digests, the same input unchanged."""
    return hashlib.sha256("\n".join(shard_ids).encode()).hexdigest()


def build_plan(config: JobConfig) -> JobPlan:
    """Discover files and plan shards from metadata; read one shard for the schema and the token estimate."""
    storage_options = config.storage_options
    files = discover_files(config.source.path, config.source.format, storage_options=storage_options)
    shards = plan_shards(files, config.source.shard_rows, storage_options=storage_options)
    rows = sum(shard.row_count for shard in shards)
    if not shards:
        raise InputError(f"input is empty: {config.source.path} has {len(files)} file(s) and no rows")
    sample = read_shard(shards[0], config.source, storage_options=storage_options)
    texts = sample.column("text").slice(0, SAMPLE_ROWS)
    lengths = pc.utf8_length(texts.fill_null("")).to_numpy(zero_copy_only=False)
    mean_chars = float(np.mean(lengths)) if len(lengths) else 0.0
    tokens_per_row = mean_chars / PLAN_CHARS_PER_TOKEN + 2
    estimated_tokens = int(rows * tokens_per_row)
    emb, limits = config.embedding, config.limits
    spec = model_spec(emb.model)
    per_request_inputs = min(emb.batch_size or spec.max_inputs, spec.max_inputs)
    per_request_tokens = emb.max_tokens_per_request or DEFAULT_MAX_TOKENS_PER_REQUEST
    requests = max(math.ceil(rows / per_request_inputs), math.ceil(estimated_tokens / per_request_tokens))
    by_tokens, by_requests = estimated_tokens / limits.tpm, requests / limits.rpm
    return JobPlan(files=files, shards=shards, rows=rows, sample=sample, mean_chars=mean_chars,
                   estimated_tokens=estimated_tokens, estimated_requests=requests,
                   estimated_cost_usd=estimated_tokens / 1e6 * limits.price_per_million_tokens,
                   estimated_minutes=max(by_tokens, by_requests),
                   binding_limit="tpm" if by_tokens >= by_requests else "rpm")


def format_plan(plan: JobPlan, config: JobConfig) -> str:
    s = plan.summary()
    limits = config.limits
    return "\n".join([
        f"files            {s['files']}",
        f"rows             {s['rows']:,}",
        f"shards           {s['shards']:,} (about {config.source.shard_rows:,} rows each)",
        f"sample           {s['sample_rows']:,} rows, {s['mean_chars_per_row']:,} characters per row on average",
        f"tokens (est.)    {s['estimated_tokens']:,} (at {PLAN_CHARS_PER_TOKEN:g} characters per token; "
        f"the run measures the real figure)",
        f"requests (est.)  {s['estimated_requests']:,}",
        f"cost (est.)      ${s['estimated_cost_usd']:,.4f} at ${limits.price_per_million_tokens:g} per million tokens",
        f"duration (est.)  {s['estimated_minutes']:,.1f} min at {limits.rpm:,} requests/min and {limits.tpm:,} "
        f"tokens/min ({s['binding_limit']} binds)",
    ])
