"""Ray job entrypoint: ``ray job submit --working-dir . -- python jobs/embed_corpus.py JOB.toml [options]``.

Runs the same code as ``embedder run``; inside a submitted job ``ray.init()`` joins the cluster it was submitted to.
"""

from __future__ import annotations

import os
import sys

# With --working-dir the project is unpacked next to this file; make the package importable without installing it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from embedder.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))
