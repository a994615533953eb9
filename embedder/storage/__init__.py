"""Storage: where every stage reads and writes files — local disk or object storage, through ``pyarrow.fs``.

One resolver turns a path or URI into a filesystem (:mod:`.locations`); small helpers write atomically, read,
list and delete (:mod:`.files`). The source, the sinks, the ledger and incremental runs all go through here.
What a failure means (transient or permanent) is decided in one place (:mod:`.errors`); transient ones are retried
with backoff under named limits and counted (:mod:`.retry`).

May import: ``embedder.errors`` and third-party I/O libraries (pyarrow). Nothing else of embedder.
"""

from __future__ import annotations

from embedder.storage.files import (
    IO_THREADS,
    TMP_PREFIX,
    check_name,
    delete_dir_contents,
    delete_files,
    ensure_dir,
    io_threads,
    json_default,
    list_files,
    now_iso,
    parallel_map,
    read_bytes,
    read_json,
    write_atomic,
    write_json_atomic,
)
from embedder.storage.locations import join, local_path, resolve, strip_scheme, uri

__all__ = [
    "IO_THREADS", "TMP_PREFIX", "check_name", "delete_dir_contents", "delete_files", "ensure_dir", "io_threads",
    "join", "json_default", "list_files", "local_path", "now_iso", "parallel_map", "read_bytes",
    "read_json", "resolve", "strip_scheme", "uri", "write_atomic", "write_json_atomic",
]
