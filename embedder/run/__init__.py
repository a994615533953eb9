"""The run: a job on Ray, from the plan to the report (see :mod:`.job` for its three steps).

    job.py        ``run_job``: prepare → execute → finish
    prepare.py    step 1: plan, ledger, duplicate ids, what is left to do, incremental classification
    execution.py  step 2's contract, and the execution for a run with nothing left to embed
    cluster.py    step 2 on Ray: start the actors, run the driver, commit through the sink actor
    driver.py     the loop: shards to workers, tables to the sink, markers to the ledger
    actors.py     the Ray actors: the cluster-wide rate limiter, the embedding workers, the sink writer
    worker.py     one shard read, embedded and turned into an output table (plain class, testable without Ray)
    limiter.py    the rate limiter's window (requests/min, tokens/min, concurrency), pure and clock-driven
    gate.py       a worker's request gate backed by the limiter actor
    metrics.py    the job's figures as Ray metrics (Prometheus, Grafana), reported from the driver's loop
    ray_data.py   ``JinaEmbed``: embedding as a Ray Data ``map_batches`` step, under a shared limiter actor
    output.py     a shard's output table and its dead letters
    progress.py   counters and rates
    progress_display.py  the live display: a rich bar on a terminal, plain lines elsewhere
    quiet.py      log levels: quiet by default, loud with --debug (this process and the actors)
    report.py     the run report and the summary
    settings.py   what the job's configuration means for each actor

Only ``actors``, ``driver``, ``cluster``, ``metrics`` (``ray.util.metrics``) and ``ray_data`` (Ray Data's batch
formats) import Ray.

May import: every stage below it (incremental, source, sinks, ledger, config, jina, storage).
"""

from __future__ import annotations
