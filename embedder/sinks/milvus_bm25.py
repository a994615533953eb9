"""BM25 full-text search in a job's Milvus collection: the function, its sparse field and index, and the check of
an existing collection.

With ``bm25 = true`` the collection gets, besides the stored ``text`` field (``enable_analyzer``: Milvus' standard
analyzer splits and lowercases it), a SPARSE_FLOAT_VECTOR field filled by a BM25 ``Function`` from that text,
indexed with SPARSE_INVERTED_INDEX and metric BM25. Milvus computes the sparse vectors itself on every upsert: the
sink never sends that field. Milvus cannot add a function or an analyzer to an existing collection, so a
collection made without them is refused at start (before any API call) with what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymilvus import DataType, Function, FunctionType

from embedder.errors import SinkError

TEXT_FIELD = "text"
"""The stored text's field (``store_text``), the BM25 function's input."""
FUNCTION_NAME = "embedder_bm25"


def add_bm25(schema: Any, text_field: str, sparse_field: str) -> None:
    """Add the sparse field and the BM25 function reading ``text_field`` to a schema being built (the text field
    itself must be added with ``enable_analyzer=True``)."""
    schema.add_field(sparse_field, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name=FUNCTION_NAME, function_type=FunctionType.BM25,
                                 input_field_names=[text_field], output_field_names=[sparse_field]))


def add_bm25_index(index_params: Any, sparse_field: str) -> None:
    """The sparse field's index: an inverted index scored with BM25."""
    index_params.add_index(field_name=sparse_field, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")


def bm25_output(described: Mapping[str, Any], text_field: str | None = None) -> str | None:
    """The sparse field a BM25 function of the collection fills (from ``text_field`` when given), or ``None``."""
    for function in described.get("functions") or []:
        if _is_bm25(function) and (text_field is None or list(function.get("input_field_names") or []) == [
                text_field]):
            outputs = list(function.get("output_field_names") or [])
            if outputs:
                return str(outputs[0])
    return None


def bm25_inputs(described: Mapping[str, Any]) -> set[str]:
    """Fields that a BM25 function of the collection reads."""
    return {str(name) for function in described.get("functions") or [] if _is_bm25(function)
            for name in function.get("input_field_names") or []}


def check_bm25(described: Mapping[str, Any], *, bm25: bool, store_text: bool, sparse_field: str, where: str,
               text_field: str = TEXT_FIELD) -> None:
    """``SinkError`` unless the existing collection fits the job's ``bm25`` / ``store_text``: asked for BM25, it
    must have the analysed text field and the BM25 function into ``sparse_field``; a collection that computes BM25
    from the text must be given the text (else its rows would lose their terms)."""
    fields = {field["name"]: field for field in described.get("fields", [])}
    if bm25 and bm25_output(described, text_field) != sparse_field:
        have, text = fields.get(sparse_field), fields.get(text_field)
        found = "no such field" if have is None else f"a {have['type'].name} field not filled by BM25"
        if text is None:
            found += f", and no '{text_field}' field to compute it from"
        elif str((text.get("params") or {}).get("enable_analyzer", "false")).lower() != "true":
            found += f", and its '{text_field}' field has no analyzer"
        raise SinkError(f"{where} has no BM25 field '{sparse_field}' ({found}), which bm25 = true needs. Milvus "
                        "cannot add a BM25 function or an analyzer to an existing collection. Nothing was written; "
                        "drop the collection, set another sink collection name, or set bm25 = false")
    if not bm25 and not store_text and text_field in bm25_inputs(described):
        raise SinkError(f"{where} computes BM25 from its '{text_field}' field, and this job does not store the "
                        "text: its rows would have no terms to search. Set store_text = true and bm25 = true, or "
                        "write to another collection. Nothing was written")


def _is_bm25(function: Mapping[str, Any]) -> bool:
    kind = function.get("type")
    return kind == FunctionType.BM25 or str(getattr(kind, "name", kind)).upper() == "BM25"
