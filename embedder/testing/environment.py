"""The environment of an ``embedder run`` subprocess started by a test."""

from __future__ import annotations

import os
from collections.abc import Mapping


def cli_env(api_base: str, api_key: str, *, ray_tmpdir: str | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its Ray, Jina, AWS or Milvus settings, plus: the key and the API base
    (the local server), unbuffered output, Ray on loopback without usage stats, and ``RAY_TMPDIR`` (a private,
    short temp dir for the run's local Ray) if given; ``extra`` last. A run that should join a
    :class:`~embedder.testing.RayCluster` instead gets ``cluster.client_env(cli_env(...), connect=True)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA", "AWS_", "MILVUS"))}
    env.update(JINA_API_KEY=api_key, JINA_API_BASE=api_base, PYTHONUNBUFFERED="1",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    if ray_tmpdir:
        env["RAY_TMPDIR"] = ray_tmpdir
    env.update(extra or {})
    return env
