"""The source: input files found, split into shards from metadata alone, and read one shard at a time.

    files.py       discover the input files (local, S3, GCS) and their formats
    shards.py      plan shards of about ``shard_rows`` rows from Parquet footers, IPC headers, text byte ranges
    reader.py      read one shard's rows and only the columns the job needs, with errors naming file and row
    duplicates.py  refuse ids that occur twice anywhere in the input, before any API call
    planning.py    the plan of a job: files, shards, rows, a token, cost and time estimate from a sample

May import: ``embedder.config``, ``embedder.storage``, ``embedder.jina`` (limits for the estimate),
``embedder.errors``.
"""

from __future__ import annotations
