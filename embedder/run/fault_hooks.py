"""Fault hooks for the fault suite, switched on through the environment; nothing sets them in a real run.

``EMBEDDER_FAULT_SINK_DIES_ON_SHARD=<shard id>``: the sink actor's process exits at once (``os._exit``, like an
out-of-memory kill: no cleanup, no exception) whenever it is asked to write that shard. Ray sees a real actor
death and restarts the actor; the driver's bound on rewrites (``SINK_WRITE_ATTEMPTS``) is what stops the job.
"""

from __future__ import annotations

import os

SINK_DIES_ON_SHARD = "EMBEDDER_FAULT_SINK_DIES_ON_SHARD"


def before_sink_write(shard_id: str) -> None:
    """Called by the sink actor before it writes ``shard_id``."""
    if os.environ.get(SINK_DIES_ON_SHARD) == shard_id:
        os._exit(70)
