"""Turns a request body into an :class:`EmbedRequest`, or an :class:`ApiError` shaped like the real API's.

Order, as the real API: invalid JSON (400); schema errors such as a missing field or a wrong type (422); an
unknown model (400 ``INPUT_MODEL_NOT_FOUND``); fields the model does not take, unknown tasks, out-of-range
dimensions (422, all reported together); too many inputs or an input too long (400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedder.jina.models import ModelSpec, is_known_model, model_spec
from embedder.mock_jina.responses import ApiError, field_error, loads
from embedder.mock_jina.tokens import count_tokens, truncate_text

EMBEDDING_TYPES = ("float", "base64", "binary", "ubinary")
SERVED_TYPES = ("float", "base64")
BOOL_FIELDS = ("normalized", "truncate", "late_chunking", "return_multivector", "return_tokenized_input")
BASE_FIELDS = frozenset({"model", "input", "embedding_type", "encoding_type", "normalized", "truncate"})
V3_FIELDS = frozenset({"task", "dimensions", "late_chunking"})
V4_FIELDS = frozenset({"return_multivector", "return_tokenized_input"})
INPUT_CODE = "INPUT_VALIDATION_ERROR"
VALIDATION_CODE = "VALIDATION_ERROR"


@dataclass
class EmbedRequest:
    """A valid request: texts already truncated when ``truncate`` was asked, tokens as billed."""

    spec: ModelSpec
    texts: list[str]
    tokens: list[int]
    embedding_types: tuple[str, ...]
    as_dict: bool
    """``embedding_type`` was a list: each ``embedding`` is then ``{type: value}``."""
    dimensions: int | None
    normalized: bool
    late_chunking: bool
    task: str | None

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


def _validation_error(errors: list[dict[str, Any]]) -> ApiError:
    return ApiError(422, VALIDATION_CODE, "validation error", errors=errors)


def _literal_message(choices: tuple[str, ...]) -> str:
    quoted = [f"'{c}'" for c in choices]
    return "Input should be " + (", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0])


def _parse_inputs(value: Any, errors: list[dict[str, Any]]) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        errors.append(field_error("input", "List should have at least 1 item", "too_short", value))
    texts: list[str] = []
    for i, item in enumerate(items):
        where = f"input -> {i}" if isinstance(value, list) else "input"
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and set(item) == {"text"} and isinstance(item["text"], str):
            texts.append(item["text"])
        elif isinstance(item, dict) and ("image" in item or "pdf" in item):
            raise ApiError(400, INPUT_CODE, "image and pdf inputs are not supported by the local server")
        else:
            errors.append(field_error(where, "Input should be a valid string or an object with a string "
                                      "'text' field", "union_type", item))
    return texts


def _check_schema(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Errors every model would report: missing required fields and wrong JSON types."""
    errors = []
    for name in ("model", "input"):
        if name not in body:
            errors.append(field_error(name, "Field required", "missing", None))
    if "model" in body and not isinstance(body["model"], str):
        errors.append(field_error("model", "Input should be a valid string", "string_type", body["model"]))
    for name in BOOL_FIELDS:
        if name in body and not isinstance(body[name], bool):
            errors.append(field_error(name, "Input should be a valid boolean", "bool_type", body[name]))
    return errors


def _embedding_types(body: dict[str, Any], errors: list[dict[str, Any]]) -> tuple[tuple[str, ...], bool]:
    name = "embedding_type" if "embedding_type" in body else "encoding_type"
    value = body.get(name, "float")
    as_dict = isinstance(value, list)
    kinds = value if as_dict else [value]
    if as_dict and not kinds:
        errors.append(field_error(name, "List should have at least 1 item", "too_short", value))
    for kind in kinds:
        if kind not in EMBEDDING_TYPES:
            errors.append(field_error(name, _literal_message(EMBEDDING_TYPES), "literal_error", kind))
        elif kind not in SERVED_TYPES:
            raise ApiError(400, INPUT_CODE, f"embedding_type '{kind}' is not supported by the local server")
    return tuple(dict.fromkeys(kinds)), as_dict


def _check_model_fields(body: dict[str, Any], spec: ModelSpec, errors: list[dict[str, Any]]) -> None:
    allowed = set(BASE_FIELDS)
    if spec.accepts_v3_fields:
        allowed |= V3_FIELDS
    if spec.name.startswith("jina-embeddings-v4"):
        allowed |= V4_FIELDS
    for name in sorted(set(body) - allowed):
        errors.append(field_error(name, "Extra inputs are not permitted", "extra_forbidden", body[name]))
    task = body.get("task")
    if "task" in allowed and task is not None:
        if not isinstance(task, str):
            errors.append(field_error("task", "Input should be a valid string", "string_type", task))
        elif spec.tasks and task not in spec.tasks:
            errors.append(field_error("task", _literal_message(spec.tasks), "literal_error", task))
    dims = body.get("dimensions")
    if "dimensions" in allowed and dims is not None and spec.max_dimensions is not None:
        if isinstance(dims, bool) or not isinstance(dims, int):
            errors.append(field_error("dimensions", "Input should be a valid integer", "int_type", dims))
        elif dims < 1:
            errors.append(field_error("dimensions", "Input should be greater than or equal to 1",
                                      "greater_than_equal", dims))
        elif dims > spec.max_dimensions:
            errors.append(field_error("dimensions", f"Input should be less than or equal to "
                                      f"{spec.max_dimensions}", "less_than_equal", dims))
    if body.get("late_chunking") is True and "late_chunking" in allowed and not spec.supports_late_chunking:
        errors.append(field_error("late_chunking", "Late chunking is not supported by this model",
                                  "value_error", True))
    for name in V4_FIELDS & allowed:
        if body.get(name) is True:
            raise ApiError(400, INPUT_CODE, f"{name} is not supported by the local server")


def _tokens(texts: list[str], spec: ModelSpec, truncate: bool) -> tuple[list[str], list[int]]:
    if len(texts) > spec.max_inputs:
        raise ApiError(400, INPUT_CODE, f"input length is larger than the largest allowed size {spec.max_inputs}")
    kept, counts = [], []
    for text in texts:
        n = count_tokens(text)
        if n > spec.max_tokens:
            if not truncate:
                raise ApiError(400, INPUT_CODE,
                               f"Single text cannot exceed {spec.max_tokens} tokens. {n} tokens given.")
            text, n = truncate_text(text, spec.max_tokens), spec.max_tokens
        kept.append(text)
        counts.append(n)
    return kept, counts


def parse_request(raw: bytes) -> EmbedRequest:
    """Validate an ``/embeddings`` body; raises :class:`ApiError` with the real API's status and shape."""
    try:
        body = loads(raw)
    except ValueError:
        raise ApiError(400, "INPUT_INVALID_JSON", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _validation_error([field_error("", "Input should be a valid dictionary", "dict_type", body)])
    errors = _check_schema(body)
    texts = _parse_inputs(body["input"], errors) if "input" in body else []
    if errors:
        raise _validation_error(errors)
    if not is_known_model(body["model"]):
        raise ApiError(400, "INPUT_MODEL_NOT_FOUND", f"Model '{body['model']}' not found")
    spec = model_spec(body["model"])
    kinds, as_dict = _embedding_types(body, errors)
    _check_model_fields(body, spec, errors)
    if errors:
        raise _validation_error(errors)
    texts, tokens = _tokens(texts, spec, bool(body.get("truncate", False)))
    return EmbedRequest(spec=spec, texts=texts, tokens=tokens, embedding_types=kinds, as_dict=as_dict,
                        dimensions=body.get("dimensions"), normalized=body.get("normalized", True),
                        late_chunking=bool(body.get("late_chunking", False)), task=body.get("task"))
