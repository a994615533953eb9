"""The harness the tests and the benchmarks share; the job itself never uses it.

    jobspec.py      job files written from Python data with ``tomli_w`` (``write_job``), and the jobs the system
                    tests run (``small_job``, ``fault_job``, ``incremental_job``)
    ray_cluster.py  a local Ray cluster (``RayCluster``: ``ray start --head`` on loopback with a fresh token,
                    worker nodes joined with ``ray start --address``), stopped by process group
    processes.py    free loopback ports, short temp dirs, and killing exactly the processes a test started (by
                    process group, or by the temp dir they use)
    environment.py  the environment of an ``embedder run`` subprocess (``cli_env``)

Ray is driven through the ``ray`` CLI and through Python run in subprocesses, never imported here (an
import-linter contract keeps ``import ray`` in ``embedder.run``). ``psutil`` (the ``bench`` extra) is not needed:
processes are found through ``/proc`` (Linux).

May import: the standard library, ``tomli_w`` (a runtime dependency), other ``embedder`` packages
(``embedder.mock_jina`` included); never Ray.
"""

from embedder.testing.environment import cli_env
from embedder.testing.jobspec import (
    COLLECTION,
    GENEROUS_LIMITS,
    MODEL,
    fault_job,
    incremental_job,
    job_tables,
    job_toml,
    sink_table,
    small_job,
    write_job,
)
from embedder.testing.processes import (
    find_process,
    free_port,
    group_members,
    kill_process_group,
    kill_processes_using,
    private_ray_tmpdir,
    processes_using,
    short_tmpdir,
    wait_group_gone,
)
from embedder.testing.ray_cluster import RayCluster, RayNode

__all__ = [
    "COLLECTION",
    "GENEROUS_LIMITS",
    "MODEL",
    "RayCluster",
    "RayNode",
    "cli_env",
    "fault_job",
    "find_process",
    "free_port",
    "group_members",
    "incremental_job",
    "job_tables",
    "job_toml",
    "kill_process_group",
    "kill_processes_using",
    "private_ray_tmpdir",
    "processes_using",
    "short_tmpdir",
    "sink_table",
    "small_job",
    "wait_group_gone",
    "write_job",
]
