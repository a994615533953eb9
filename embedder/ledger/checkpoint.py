"""The checkpoint ledger: a folder (local or object storage) that says which shards are finished.

Layout::

    <ledger>/fingerprint.json        the job's fingerprint and the fields it hashes
    <ledger>/plan.json               the latest plan (rewritten each run); shard ids inline, or in
    <ledger>/plan_shards.parquet     ... when there are more than INLINE_SHARD_IDS of them
    <ledger>/done/<shard_id>.json    one marker per finished shard
    <ledger>/_failed/<shard_id>.parquet   dead-letter rows of that shard
    <ledger>/_failed/history/        dead letters of shards no longer in the plan (their file was fixed)
    <ledger>/heartbeat.json          counters of the running driver, rewritten every few seconds
    <ledger>/run_report.json         written at the end of a run

A done marker is the only truth that a shard is finished, like dlt's ``completed_jobs/`` folder: it is written
atomically (see :mod:`embedder.storage.files`) after the sinks hold the shard and after its dead-letter rows, so a
crash at any point leaves either no marker (the shard is done again, its files replaced) or a complete one. Dead-letter
files without a marker are ignored for the same reason.

The ledger stores no secrets: nothing here takes credentials, and every write refuses secret-looking field names
(``api_key``, ``token``, ``password``...) and the value of any variable a key comes from (see
:mod:`embedder.ledger.guard`). What it stores are the typed records of :mod:`embedder.ledger.records`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from embedder import storage
from embedder.errors import LedgerError
from embedder.ledger.guard import DEFAULT_SECRET_ENVS, check_no_secrets, redact_columns, redact_secrets
from embedder.ledger.records import DEAD_LETTER_SCHEMA, DoneMarker, Heartbeat, RunReport
from embedder.storage import retry
from embedder.storage.retry import HEARTBEAT, LEDGER_MARKER, LEDGER_READ

FINGERPRINT_FILE = "fingerprint.json"
PLAN_FILE = "plan.json"
PLAN_SHARDS_FILE = "plan_shards.parquet"
DONE_DIR = "done"
FAILED_DIR = "_failed"
HISTORY_DIR = "_failed/history"
HEARTBEAT_FILE = "heartbeat.json"
REPORT_FILE = "run_report.json"
T = TypeVar("T")
INLINE_SHARD_IDS = 10_000
"""Plans with more shards keep their ids in ``plan_shards.parquet`` so ``plan.json`` stays small."""


class Ledger:
    """A job's checkpoint folder. Get one with :meth:`open` (a run) or :meth:`load` (read-only, for status)."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, location: str,
                 secret_envs: Sequence[str] = DEFAULT_SECRET_ENVS) -> None:
        self.filesystem = filesystem
        self.root = root
        self.location = location
        """The folder as the user gave it (a local path made absolute, or a URI)."""
        self.secret_envs = tuple(secret_envs)
        """Environment variables whose values must never be written here."""

    def _guard(self, obj: Any, where: str) -> None:
        check_no_secrets(obj, where, self.secret_envs)

    def _io(self, operation: str, name: str, fn: Callable[[], T]) -> T:
        """``fn()`` as one storage operation on ``name`` (relative to the ledger): transient errors retried
        within ``operation``'s limit (:mod:`embedder.storage.retry`), failures named with the path."""
        return retry.call(operation, self._show(name), fn)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, location: str, fingerprint: str, fields: dict, *, restart: bool = False,
             filesystem: pafs.FileSystem | None = None, storage_options: dict | None = None,
             secret_envs: Sequence[str] = DEFAULT_SECRET_ENVS) -> Ledger:
        """Open (or create) the ledger of the job with ``fingerprint``.

        Same fingerprint: reuse the finished shards. Another fingerprint: ``LedgerError`` listing the fields that
        differ, unless ``restart``, which deletes markers, dead letters, plan, heartbeat and report first.
        ``location`` is a local path or a URI; ``filesystem`` or ``storage_options`` work as in
        :func:`embedder.storage.resolve` (S3 also honours ``$AWS_ENDPOINT_URL``). ``secret_envs``: the variables
        whose values are refused in every file written (see :mod:`embedder.ledger.guard`).
        """
        check_no_secrets(fields, FINGERPRINT_FILE, secret_envs)
        ledger = cls._at(location, filesystem, storage_options)
        ledger.secret_envs = tuple(secret_envs)
        try:
            existing = ledger.read_fingerprint()
        except LedgerError:
            if not restart:
                raise
            existing = None  # an unreadable fingerprint is what --restart is for
        if restart:
            ledger._wipe()
        elif existing is None:
            if ledger.done_ids():
                raise LedgerError(f"checkpoint ledger {ledger.location} has done markers but no "
                                  f"{FINGERPRINT_FILE}; use --restart to start over "
                                  "(finished shards will be embedded again)")
        elif existing.get("fingerprint") != fingerprint:
            raise LedgerError(_mismatch_message(ledger.location, existing, fingerprint, fields))
        if restart or existing is None:
            record = {"fingerprint": fingerprint, "fields": fields, "created_at": storage.now_iso(),
                      "embedder_version": _version()}

            def write_fingerprint() -> None:
                storage.ensure_dir(ledger.filesystem, ledger.root)
                storage.write_json_atomic(ledger.filesystem, ledger._path(FINGERPRINT_FILE), record)

            ledger._io(LEDGER_MARKER, FINGERPRINT_FILE, write_fingerprint)
        for sub in (DONE_DIR, FAILED_DIR):
            ledger._io(LEDGER_MARKER, sub, functools.partial(storage.ensure_dir, ledger.filesystem, ledger._path(sub)))
        return ledger

    @classmethod
    def load(cls, location: str, *, filesystem: pafs.FileSystem | None = None,
             storage_options: dict | None = None) -> Ledger:
        """Open an existing ledger read-only; ``LedgerError`` when there is none at ``location``."""
        ledger = cls._at(location, filesystem, storage_options)
        if ledger.read_fingerprint() is None:
            raise LedgerError(f"no checkpoint ledger at {ledger.location} ({FINGERPRINT_FILE} not found)")
        return ledger

    @classmethod
    def _at(cls, location: str, filesystem: pafs.FileSystem | None, options: dict | None) -> Ledger:
        fs, root = storage.resolve(location, options, filesystem=filesystem)
        shown = location if filesystem is not None or "://" in location else root
        return cls(fs, root, shown)

    def read_fingerprint(self) -> dict | None:
        """The content of ``fingerprint.json``; ``None`` when missing, ``LedgerError`` when unreadable."""
        data = self._read_json(FINGERPRINT_FILE)
        if data is not None and not (isinstance(data, dict) and "fingerprint" in data):
            raise LedgerError(f"{self._show(FINGERPRINT_FILE)} is not a ledger fingerprint file")
        return data

    def _wipe(self) -> None:
        # markers first: they are the truth; whatever survives an interrupted wipe is redone or wiped again
        fs = self.filesystem
        self._io(LEDGER_MARKER, DONE_DIR, lambda: storage.delete_dir_contents(fs, self._path(DONE_DIR)))
        self._io(LEDGER_MARKER, FAILED_DIR, lambda: storage.delete_dir_contents(fs, self._path(FAILED_DIR)))
        self._io(LEDGER_MARKER, "", lambda: storage.delete_files(fs, [self._path(n) for n in (
            REPORT_FILE, HEARTBEAT_FILE, PLAN_FILE, PLAN_SHARDS_FILE, FINGERPRINT_FILE)]))

    # ------------------------------------------------------------------ done markers
    def done_ids(self) -> set[str]:
        """Ids of the finished shards: one listing of ``done/``, no file reads."""
        names = self._io(LEDGER_READ, DONE_DIR, lambda: storage.list_files(self.filesystem, self._path(DONE_DIR)))
        return {name[:-5] for name in names if name.endswith(".json") and not name.startswith((".", "_"))}

    def done_markers(self) -> list[DoneMarker]:
        """Every done marker, sorted by shard id (read in parallel)."""
        def read(shard_id: str) -> DoneMarker | None:
            data = self._read_json(f"{DONE_DIR}/{shard_id}.json")
            return None if data is None else DoneMarker.from_dict(data)

        markers = storage.parallel_map(read, sorted(self.done_ids()), storage.io_threads(self.filesystem))
        return [m for m in markers if m is not None]  # a marker forgotten meanwhile is simply gone

    def mark_done(self, marker: DoneMarker, dead_letters: pa.Table | None = None) -> None:
        """Record a shard as finished. Call only after every sink holds the shard.

        ``dead_letters`` (columns of :data:`~embedder.ledger.records.DEAD_LETTER_SCHEMA`; missing ones are null)
        replace the shard's previous dead letters; none removes them. They are written before the marker, so a
        marker always has its dead letters in place.
        """
        shard_id = storage.check_name(marker.shard_id)
        if not marker.finished_at:
            marker.finished_at = storage.now_iso()
        data = marker.to_dict()
        self._guard(data, f"done marker of {shard_id}")
        failed_path = self._failed_path(shard_id)
        marker.stats.failed = 0 if dead_letters is None else dead_letters.num_rows
        data["failed"] = marker.stats.failed
        fs, failed_name = self.filesystem, f"{FAILED_DIR}/{shard_id}.parquet"
        if marker.stats.failed:
            buf = pa.BufferOutputStream()
            rows = redact_columns(_conform(shard_id, dead_letters), ("reason",), self.secret_envs)  # the API's text
            pq.write_table(rows, buf, compression="zstd")
            self._io(LEDGER_MARKER, failed_name, lambda: storage.write_atomic(fs, failed_path, buf.getvalue()))
        else:
            self._io(LEDGER_MARKER, failed_name, lambda: storage.delete_files(fs, [failed_path]))
        self._io(LEDGER_MARKER, f"{DONE_DIR}/{shard_id}.json", lambda: storage.write_json_atomic(
            fs, self._marker_path(shard_id), data, indent=None))

    def forget(self, shard_ids: Iterable[str]) -> None:
        """Remove the done markers of ``shard_ids`` so the next run does them again (``--retry-failed``)."""
        paths = [self._marker_path(storage.check_name(s)) for s in shard_ids]
        self._io(LEDGER_MARKER, DONE_DIR, lambda: storage.delete_files(self.filesystem, paths))

    # ------------------------------------------------------------------ dead letters
    def failed_rows(self) -> pa.Table:
        """All dead-letter rows of finished shards (an empty table when there are none)."""
        paths = [self._failed_path(s) for s in sorted(self.failed_shard_ids())]

        def read(path: str) -> pa.Table | None:
            data = self._io(LEDGER_READ, FAILED_DIR, lambda: storage.read_bytes(self.filesystem, path))
            return None if data is None else pq.read_table(pa.BufferReader(data), schema=DEAD_LETTER_SCHEMA)

        tables = [t for t in storage.parallel_map(read, paths, storage.io_threads(self.filesystem)) if t is not None]
        return pa.concat_tables(tables) if tables else DEAD_LETTER_SCHEMA.empty_table()

    def failed_shard_ids(self) -> set[str]:
        """Finished shards that have dead-letter rows (one listing each of ``_failed/`` and ``done/``)."""
        names = self._io(LEDGER_READ, FAILED_DIR, lambda: storage.list_files(self.filesystem, self._path(FAILED_DIR)))
        ids = {n[:-8] for n in names if n.endswith(".parquet") and not n.startswith((".", "_"))}
        return ids & self.done_ids()

    def retire_failed(self, shard_ids: Iterable[str]) -> list[str]:
        """Move the dead letters of ``shard_ids`` to ``_failed/history/``: kept for the record, no longer counted
        (their shards left the plan: the file was fixed or removed). Returns the shard ids moved."""
        return [shard_id for shard_id in shard_ids if self._retire_one(storage.check_name(shard_id))]

    def _retire_one(self, shard_id: str) -> bool:
        fs, source, target = self.filesystem, self._failed_path(shard_id), f"{HISTORY_DIR}/{shard_id}.parquet"
        data = self._io(LEDGER_READ, FAILED_DIR, lambda: storage.read_bytes(fs, source))
        if data is None:
            return False

        def copy() -> None:
            storage.ensure_dir(fs, self._path(HISTORY_DIR))
            storage.write_atomic(fs, self._path(target), data)

        self._io(LEDGER_MARKER, target, copy)
        self._io(LEDGER_MARKER, FAILED_DIR, lambda: storage.delete_files(fs, [source]))
        return True

    # ------------------------------------------------------------------ plan, heartbeat, report
    def write_plan(self, summary: dict, shard_ids: list[str]) -> None:
        """Record this run's plan: ``summary`` (rows, files...) plus the shard ids, with ``shards`` and
        ``started_at`` filled in."""
        self._guard(summary, PLAN_FILE)
        plan = {**summary, "shards": len(shard_ids), "started_at": storage.now_iso()}
        if len(shard_ids) <= INLINE_SHARD_IDS:
            plan["shard_ids"] = list(shard_ids)
        else:
            buf = pa.BufferOutputStream()
            pq.write_table(pa.table({"shard_id": pa.array(shard_ids, pa.string())}), buf)
            self._io(LEDGER_MARKER, PLAN_SHARDS_FILE, lambda: storage.write_atomic(
                self.filesystem, self._path(PLAN_SHARDS_FILE), buf.getvalue()))
            plan["shard_ids_file"] = PLAN_SHARDS_FILE
        self._io(LEDGER_MARKER, PLAN_FILE, lambda: storage.write_json_atomic(self.filesystem, self._path(PLAN_FILE),
                                                                             plan))

    def read_plan(self, *, include_shard_ids: bool = True) -> dict | None:
        """The latest plan, or ``None``. ``shard_ids`` is always a list when ``include_shard_ids``; without it
        the (possibly large) id list is left out."""
        plan = self._read_json(PLAN_FILE)
        if plan is None:
            return None
        ids_file = plan.pop("shard_ids_file", None)
        if not include_shard_ids:
            plan.pop("shard_ids", None)
        elif ids_file is not None:
            data = self._io(LEDGER_READ, ids_file, lambda: storage.read_bytes(self.filesystem, self._path(ids_file)))
            if data is None:
                raise LedgerError(f"{self._show(PLAN_FILE)} refers to missing {ids_file}")
            plan["shard_ids"] = pq.read_table(pa.BufferReader(data)).column("shard_id").to_pylist()
        return plan

    def write_heartbeat(self, beat: Heartbeat) -> None:
        """Save the running driver's progress; when, where and which process are filled in here."""
        beat.updated_at, beat.unix_time = storage.now_iso(), time.time()
        beat.host, beat.pid = socket.gethostname(), os.getpid()
        data = beat.to_dict()
        self._guard(data, HEARTBEAT_FILE)
        self._io(HEARTBEAT, HEARTBEAT_FILE, lambda: storage.write_json_atomic(
            self.filesystem, self._path(HEARTBEAT_FILE), data, indent=None))

    def read_heartbeat(self) -> Heartbeat | None:
        data = self._read_json(HEARTBEAT_FILE)
        return None if data is None else Heartbeat.from_dict(data)

    def write_report(self, report: RunReport) -> None:
        """Save the run report (``finished_at`` is filled in when empty)."""
        report.finished_at = report.finished_at or storage.now_iso()
        report.error = redact_secrets(report.error, self.secret_envs)  # an error's text may quote anything
        data = report.to_dict()
        self._guard(data, REPORT_FILE)
        self._io(LEDGER_MARKER, REPORT_FILE, lambda: storage.write_json_atomic(self.filesystem,
                                                                               self._path(REPORT_FILE), data))

    def read_report(self) -> RunReport | None:
        data = self._read_json(REPORT_FILE)
        return None if data is None else RunReport.from_dict(data)

    # ------------------------------------------------------------------ paths
    def _path(self, name: str) -> str:
        return storage.join(self.root, name)

    def _marker_path(self, shard_id: str) -> str:
        return self._path(f"{DONE_DIR}/{shard_id}.json")

    def _failed_path(self, shard_id: str) -> str:
        return self._path(f"{FAILED_DIR}/{shard_id}.parquet")

    def _show(self, name: str) -> str:
        return storage.join(self.location, name)

    def _read_json(self, name: str) -> Any | None:
        try:
            data = self._io(LEDGER_READ, name, lambda: storage.read_bytes(self.filesystem, self._path(name)))
            return None if data is None else json.loads(data)
        except ValueError as exc:
            raise LedgerError(f"{self._show(name)} is not valid JSON: {exc}") from exc

    def __repr__(self) -> str:
        return f"Ledger({self.location!r})"


def _conform(shard_id: str, rows: pa.Table) -> pa.Table:
    """``rows`` in :data:`DEAD_LETTER_SCHEMA`: ids as text, the shard id filled in, missing columns null."""
    n = rows.num_rows
    columns = []
    for field in DEAD_LETTER_SCHEMA:
        if field.name == "shard_id":
            columns.append(pa.array([shard_id] * n, pa.string()))
        elif field.name in rows.column_names:
            columns.append(rows.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=DEAD_LETTER_SCHEMA)


def flatten_fields(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested fields as one level of dotted keys (``sink.uri``)."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Mapping):
            flat.update(flatten_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _mismatch_message(location: str, existing: dict, fingerprint: str, fields: dict) -> str:
    old, new = flatten_fields(existing.get("fields") or {}), flatten_fields(fields)
    missing = object()

    def show(value: Any) -> str:
        return "(unset)" if value is missing else json.dumps(value, default=str)

    diffs = [f"  {key}: {show(old.get(key, missing))} → {show(new.get(key, missing))}"
             for key in sorted(old.keys() | new.keys()) if old.get(key, missing) != new.get(key, missing)]
    if not diffs:
        diffs = [f"  fingerprint: {existing.get('fingerprint')} → {fingerprint} (same fields: the fingerprint "
                 "recipe changed)"]
    return (f"checkpoint ledger {location} belongs to a different job; these settings differ (old → new):\n"
            + "\n".join(diffs)
            + "\nuse --restart to start over (finished shards will be embedded again), "
              "or choose another checkpoint folder")


def _version() -> str:
    try:
        return importlib.metadata.version("embedder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
