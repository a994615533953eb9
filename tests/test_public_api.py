from __future__ import annotations

import subprocess
import sys

import embedder


def test_public_names_are_exported_and_sorted():
    assert embedder.__all__ == sorted(embedder.__all__)
    for name in embedder.__all__:
        assert hasattr(embedder, name), name


def test_importing_the_library_does_not_import_ray():
    code = "import sys, embedder; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
