"""The public API is the product: what ``embedder`` exports, and what importing it costs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import embedder

EXPORTS = [
    "ConfigError", "EmbedderError", "FatalError", "InputError", "InputRejected", "JinaEmbeddingFunction", "JinaError",
    "JobConfig", "LedgerError", "PermanentError", "RateLimited", "ResponseMismatch", "RunOptions", "SinkError",
    "TransientError", "ValidationError", "__version__", "load_job", "read_manifest_dataset", "run_job",
]
"""What the README uses: loading and running a job, reading its output, the seed's function, the errors."""
HEAVY = ("ray", "pymilvus", "pyarrow", "milvus_lite", "grpc")


REPORT = ("import json, sys; print(json.dumps({'heavy': sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY)), "
          "'modules': sorted(m for m in sys.modules if m.startswith('embedder'))}))")
"""Appended to the code a fresh interpreter runs: which heavy packages and which of ours it loaded."""


def _fresh_python(code: str) -> dict:
    program = f"{code}\nHEAVY = {HEAVY!r}\n{REPORT}"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", program], capture_output=True, text=True,
                         check=True)
    total_us = 0
    for line in out.stderr.splitlines():  # "import time: self [us] | cumulative | imported package"
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == "embedder":
            total_us = int(parts[1])
    return {**json.loads(out.stdout), "import_us": total_us}


def test_the_export_list_is_the_documented_one_and_every_name_resolves():
    assert embedder.__all__ == EXPORTS == sorted(EXPORTS)
    for name in embedder.__all__:
        assert getattr(embedder, name) is not None, name
    assert issubclass(embedder.SinkError, embedder.EmbedderError)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        embedder.nope  # noqa: B018


def test_importing_the_library_loads_no_heavy_package(record_property):
    """``import embedder`` costs what the interpreter needs for its own module: no Ray, pymilvus, pyarrow. The
    import time is recorded as a figure (``-X importtime``), not asserted: this machine is shared and noisy."""
    found = _fresh_python("import embedder")
    assert found["heavy"] == []
    assert found["modules"] == ["embedder"]  # the public names load their modules on first use
    record_property("import_embedder_us", found["import_us"])
    print(f"\nimport embedder: {found['import_us'] / 1000:.1f} ms (cumulative, -X importtime)")


def test_the_function_and_the_config_load_without_ray_or_pymilvus():
    found = _fresh_python("from embedder import JinaEmbeddingFunction, load_job, ConfigError")
    assert found["heavy"] == []
