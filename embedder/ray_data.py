"""Embedding as a step of a Ray Data pipeline: ``from embedder.ray_data import JinaEmbed`` (see docs/ray-data.md).

The class lives in :mod:`embedder.run.ray_data`, beside the job's actors; it is loaded on first use, so importing
this module loads neither Ray nor pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["JinaEmbed"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'embedder.ray_data' has no attribute {name!r}")
    value = getattr(importlib.import_module("embedder.run.ray_data"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from embedder.run.ray_data import JinaEmbed
