"""What the client and the local server know about each Jina embedding model.

These are the limits of ``docs/jina-api.md`` (gathered from Jina's public documents and clients). They are defaults,
not constants: the batching options of the client override ``max_inputs``; an unknown model name gets
:data:`GENERIC` so a model Jina adds later still works (the API itself then decides what it accepts).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_API_BASE = "https://api.jina.ai/v1"
"""Where the embeddings API lives; ``$JINA_API_BASE`` or ``embedding.api_base`` point elsewhere."""
API_KEY_ENVS = ("JINA_API_KEY", "JINAAI_API_KEY")
"""Environment variables a key is read from when none is named, in order."""
EMBEDDING_TYPES = ("base64", "float")
"""Wire formats of the vectors this client decodes (``base64`` is ~4x smaller and far cheaper to decode)."""
V3_TASKS = ("retrieval.query", "retrieval.passage", "text-matching", "classification", "separation")
V4_TASKS = ("text-matching", "retrieval.query", "retrieval.passage", "code.query", "code.passage")
V5_TASKS = ("retrieval.query", "retrieval.passage", "text-matching", "clustering", "classification")


@dataclass(frozen=True)
class ModelSpec:
    """Limits and accepted request fields of one embedding model."""

    name: str
    max_inputs: int
    """Inputs per request the API accepts."""
    max_tokens: int
    """Tokens per input before the API rejects it (or truncates it when asked)."""
    default_dimensions: int
    """Vector size when ``dimensions`` is not sent."""
    max_dimensions: int | None
    """Largest ``dimensions`` accepted; ``None`` means the model takes no ``dimensions`` field (v2)."""
    tasks: tuple[str, ...] | None
    """Accepted ``task`` values; ``()`` means no ``task`` field (v2); ``None`` means not checked here."""
    default_task: str | None
    supports_late_chunking: bool
    late_chunking_max_tokens: int = 8192
    """With late chunking, the concatenation of a request's inputs is cut at this many tokens."""

    @property
    def accepts_v3_fields(self) -> bool:
        """v2 models accept only model, input, embedding_type, normalized and truncate (others give a 422)."""
        return self.max_dimensions is not None

    def dimensions_or_default(self, dimensions: int | None) -> int:
        return dimensions if dimensions is not None else self.default_dimensions


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("jina-embeddings-v3", 2048, 8192, 1024, 1024, V3_TASKS, None, True),
        ModelSpec("jina-embeddings-v4", 512, 32768, 2048, 2048, V4_TASKS, "text-matching", True),
        ModelSpec("jina-embeddings-v5-text-small", 512, 32768, 1024, 1024, V5_TASKS, "text-matching", True),
        ModelSpec("jina-embeddings-v5-text-nano", 512, 8192, 768, 768, V5_TASKS, "text-matching", True),
        ModelSpec("jina-embeddings-v2-base-en", 2048, 8192, 768, None, (), None, False),
        ModelSpec("jina-embeddings-v2-base-code", 2048, 8192, 768, None, (), None, False),
        ModelSpec("jina-code-embeddings-0.5b", 512, 32768, 896, 896, None, None, False),
        ModelSpec("jina-code-embeddings-1.5b", 512, 32768, 1536, 1536, None, None, False),
    )
}

GENERIC = ModelSpec("generic", 512, 8192, 1024, 1024, None, None, True)


def model_spec(name: str) -> ModelSpec:
    """The known spec of ``name``, or :data:`GENERIC` limits under that name for a model not listed here."""
    spec = MODELS.get(name)
    if spec is not None:
        return spec
    return ModelSpec(name, GENERIC.max_inputs, GENERIC.max_tokens, GENERIC.default_dimensions,
                     GENERIC.max_dimensions, None, None, True)


def is_known_model(name: str) -> bool:
    return name in MODELS
