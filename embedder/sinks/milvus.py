"""Milvus output: rows upserted by id into one collection, flushed, indexed and counted once at commit.

    start()   connect; create the collection (schema, index, the job's model/task/dimensions/fingerprint as
              ``embedder.*`` properties) or check the existing one: a mismatch is a ``SinkError`` before any write
    write()   upsert the shard's rows in requests of at most ``batch_bytes``: a replayed shard replaces its rows
    commit()  flush once, make sure the index is built and the collection loaded, then ``count(*)``

Milvus Lite (``uri`` a local ``*.db`` path, a directory) runs inside the process that opens it, one process at
a time (a LOCK file). Requests are built as protobuf with the vectors as one packed float buffer and sent through
pymilvus' handler (``client.upsert(list_of_dicts)`` converts float by float); without those pymilvus internals
the public ``client.upsert`` is used. The token is read from ``$<token_env>`` only when connecting. See
docs/milvus.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc
import pyarrow as pa

from embedder.config import MilvusSinkConfig
from embedder.config.sinks import is_lite_uri
from embedder.errors import SinkError
from embedder.secrets import mask_uri
from embedder.sinks import milvus_schema as ms
from embedder.sinks.base import (
    CommitReceipt,
    Sink,
    SinkStartInfo,
    WriteReceipt,
    check_vector_column,
    stored_columns,
)
from embedder.sinks.milvus_bm25 import TEXT_FIELD, add_bm25_index, check_bm25
from embedder.storage import retry

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE_ATTEMPTS = retry.LIMITS[retry.MILVUS_CALL].attempts
"""Tries of one upsert / flush / load when Milvus answers with a transient error (unavailable, rate limited):
the named limit ``milvus call`` of :mod:`embedder.storage.retry`."""
BACKOFF_BASE_S = retry.LIMITS[retry.MILVUS_CALL].base_s
BACKOFF_MAX_S = retry.LIMITS[retry.MILVUS_CALL].max_s
RPC_TIMEOUT_S = 300.0
"""Bound of one call, pymilvus' own reconnect retries included (they would otherwise go on for minutes)."""
CONNECT_TIMEOUT_S = 30.0
INDEX_WAIT_S = 600.0
"""How long commit waits for a server to finish building the index before counting anyway."""
LOCK_WAIT_S = 30.0
"""How long a sink waits for another process (a killed run's sink actor still exiting) to release Milvus Lite."""
_POLL_S = 0.25
_TRANSIENT_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
_sleep = time.sleep  # replaced in tests


# --- connecting --------------------------------------------------------------------------------------------


def lite_in_use(path: str) -> bool:
    """Whether another process holds the Milvus Lite database at ``path`` (it keeps an flock on ``LOCK``)."""
    import fcntl

    from milvus_lite.server_manager import server_manager_instance

    if os.path.abspath(path) in getattr(server_manager_instance, "_servers", {}):
        return False  # this process serves it already
    try:
        fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lite_locked_error(path: str) -> SinkError:
    return SinkError(f"Milvus Lite database {path} is open in another process (a running job, or `embedder search`"
                     "?). Milvus Lite allows one process per database: wait until it exits, or serve the database "
                     f"with `milvus-lite server --data-dir {path}` and use its http:// URI everywhere")


def connect(uri: str, *, db_name: str = "", token_env: str = "MILVUS_TOKEN", lock_wait_s: float = 0.0) -> Any:
    """A ``MilvusClient`` for ``uri``: a local ``*.db`` path (Milvus Lite, parent folder created) or a server URL
    with the token from ``$<token_env>``. ``SinkError`` when it cannot connect or the Lite database is in use."""
    from pymilvus import MilvusClient

    token = ""
    if is_lite_uri(uri):
        uri = os.path.abspath(uri)
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        deadline = time.monotonic() + lock_wait_s
        while lite_in_use(uri):
            if time.monotonic() >= deadline:
                raise lite_locked_error(uri)
            _sleep(_POLL_S)
    else:
        token = os.environ.get(token_env, "")
    try:
        return MilvusClient(uri=uri, token=token, db_name=db_name, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # every failure to connect becomes one clear SinkError
        if is_lite_uri(uri) and lite_in_use(uri):
            raise lite_locked_error(uri) from None
        database = f" (database {db_name})" if db_name else ""
        raise SinkError(f"cannot connect to Milvus at {mask_uri(uri)}{database}: {describe_error(exc)}") from None


def disconnect(client: Any, uri: str) -> None:
    """Close ``client``; for Milvus Lite also stop its in-process server, which releases the database's LOCK."""
    with contextlib.suppress(Exception):
        client.close()
    if is_lite_uri(uri):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(os.path.abspath(uri))


def describe_error(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return f"{message} (code {exc.code})" if message and hasattr(exc, "code") else f"{type(exc).__name__}: {exc}"


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unavailable, overloaded or rate limiting. Decided by type and code."""
    from pymilvus.exceptions import ErrorCode, MilvusException, MilvusUnavailableException

    if isinstance(exc, grpc.RpcError):
        return exc.code() in _TRANSIENT_GRPC
    if isinstance(exc, MilvusUnavailableException):
        return True
    if isinstance(exc, MilvusException):
        return exc.retriable or exc.code == ErrorCode.RATE_LIMIT or exc.code in _TRANSIENT_GRPC
    return isinstance(exc, ConnectionError | TimeoutError)


# --- the sink ----------------------------------------------------------------------------------------------


class MilvusSink(Sink):
    """Upserts each shard's rows into ``collection`` at ``uri`` (Milvus Lite ``*.db`` path or server URL)."""

    name = "milvus"

    def __init__(self, config: MilvusSinkConfig, *, lock_wait_s: float = LOCK_WAIT_S, fast_path: bool = True) -> None:
        self.config = config
        # a relative Lite path means the driver's working directory, whatever the actor's is
        self.uri = os.path.abspath(config.uri) if config.is_lite else config.uri
        self.collection = config.collection
        self.lock_wait_s = lock_wait_s
        self.fast_path = fast_path
        self._client: Any = None
        self._info: SinkStartInfo | None = None
        self._fields: list[ms.FieldSpec] = []
        self._described: dict[str, Any] = {}
        self._written: dict[str, int] = {}  # shard id -> rows, for shards written by this object (or receipts)
        self.retries = retry.RetryCounter()
        """Milvus calls retried (operation ``milvus call``); each write's share goes into its receipt."""

    @property
    def location(self) -> str:
        return self.config.location

    @property
    def where(self) -> str:
        database = f", database '{self.config.db_name}'" if self.config.db_name else ""
        return f"Milvus collection '{self.collection}' at {mask_uri(self.uri)}{database}"

    # ------------------------------------------------------------------ lifecycle
    def start(self, info: SinkStartInfo) -> None:
        if info.dimensions <= 0:
            raise SinkError(f"dimensions must be positive, got {info.dimensions}")
        columns = info.passthrough_schema
        if self.config.store_text:  # the embedded text, as a field of its own
            columns = columns.append(pa.field("text", pa.string()))
        fields = ms.expected_fields(columns, info.id_type, info.dimensions, self.config.id_field,
                                    self.config.vector_field)
        if self.config.bm25:  # the text is analysed into terms
            fields = [replace(spec, analyzer=True) if spec.name == TEXT_FIELD else spec for spec in fields]
        client = self._open()
        if not self._call("has_collection", lambda: client.has_collection(self.collection)):
            self._create(client, fields, info)
        described = self._call("describe_collection", lambda: client.describe_collection(self.collection))
        check_bm25(described, bm25=self.config.bm25, store_text=self.config.store_text,
                   sparse_field=self.config.sparse_field, where=self.where)
        found = ms.check_collection(described, fields, self.where)
        self._check_properties(described.get("properties") or {}, info)
        # the existing collection's limits decide what fits (it may allow longer strings, or refuse nulls)
        self._fields = [replace(spec, max_length=found[spec.name].max_length, nullable=found[spec.name].nullable)
                        for spec in fields]
        self._described = described
        self._info = info

    def write(self, shard_id: str, table: pa.Table) -> WriteReceipt:
        info = self._started()
        table = stored_columns(table, store_text=self.config.store_text)
        check_vector_column(table, info.dimensions)
        encoded = ms.encode_table(table, self._fields, shard_id)
        before = self.retries.counts()
        for start, stop in ms.split_by_bytes(encoded.row_bytes, self.config.batch_bytes):
            self._call(f"upsert of shard {shard_id} (rows {start}..{stop - 1})",
                       functools.partial(self._upsert, encoded, start, stop))
        self._written[shard_id] = table.num_rows
        return WriteReceipt(shard_id=shard_id, rows=table.num_rows, bytes=int(encoded.row_bytes.sum()),
                            location=self.location, storage_retries=self.retries.since(before))

    def commit(self, shard_ids: Sequence[str], receipts: Iterable[WriteReceipt] = (), *,
               expected_rows: int | None = None) -> CommitReceipt:
        """Flush, index, load and count. ``expected_rows``: the rows the whole plan put into this collection
        (the driver knows them from the ledger); without it, the rows of the receipts and of this object's own
        writes when they cover every shard. A difference is logged and reported, not raised: the ledger stays
        the truth about what was written, and the collection may also hold rows of other inputs."""
        self._started()
        for receipt in receipts:
            if receipt.location == self.location:
                self._written[receipt.shard_id] = receipt.rows
        client = self._open()
        self._call("flush", lambda: client.flush(self.collection, timeout=RPC_TIMEOUT_S))
        self._ensure_index(client)
        self._call("load", lambda: client.load_collection(self.collection, timeout=RPC_TIMEOUT_S))
        rows = self._call("count(*)", lambda: client.query(self.collection, filter="", output_fields=["count(*)"],
                                                            consistency_level="Strong", timeout=RPC_TIMEOUT_S))
        count = int(rows[0]["count(*)"]) if rows else 0
        wanted = set(shard_ids)
        if expected_rows is None and wanted <= self._written.keys():
            expected_rows = sum(self._written[s] for s in wanted)
        if expected_rows is not None and count != expected_rows:
            log.warning("%s holds %d rows; this run's plan put %d rows into it", self.where, count, expected_rows)
        self.close()
        return CommitReceipt(rows=count, parts=len(wanted), location=self.location,
                             extra={"collection": self.collection, "count": count, "expected_rows": expected_rows})

    keeps_rows_between_runs = True
    DELETE_BATCH = 10_000

    def delete_ids(self, ids: pa.Array) -> int:
        """Delete rows by primary key, in bounded batches (an incremental run's deleted ids)."""
        self._started()
        client = self._open()
        values = ids.to_pylist()
        for start in range(0, len(values), self.DELETE_BATCH):
            batch = values[start:start + self.DELETE_BATCH]
            self._call(f"delete of {len(batch)} ids",
                       functools.partial(client.delete, self.collection, ids=batch, timeout=RPC_TIMEOUT_S))
        return len(values)

    def abort(self) -> None:
        self.close()  # upserted rows stay: the ledger refers to them on resume

    def close(self) -> None:
        """Release the connection (and Milvus Lite's LOCK); a later call opens it again."""
        client, self._client = self._client, None
        if client is not None:
            disconnect(client, self.uri)

    # ------------------------------------------------------------------ helpers
    def _open(self) -> Any:
        if self._client is None:  # lazily, inside the actor that writes
            self._client = connect(self.uri, db_name=self.config.db_name, token_env=self.config.token_env,
                                   lock_wait_s=self.lock_wait_s)
        return self._client

    def _started(self) -> SinkStartInfo:
        if self._info is None:
            raise SinkError("MilvusSink.start() must be called before write() or commit()")
        return self._info

    def _create(self, client: Any, fields: list[ms.FieldSpec], info: SinkStartInfo) -> None:
        schema = ms.build_schema(client, fields, enable_dynamic_field=self.config.enable_dynamic_field,
                                 sparse_field=self.config.sparse_field if self.config.bm25 else None)
        properties = {"embedder.model": info.model, "embedder.task": info.task or "",
                      "embedder.dimensions": str(info.dimensions), "embedder.fingerprint": info.fingerprint}
        try:
            client.create_collection(self.collection, schema=schema, properties=properties,
                                     consistency_level="Strong", timeout=RPC_TIMEOUT_S)
        except Exception as exc:  # another sink actor may have created it first
            if not client.has_collection(self.collection):
                raise SinkError(f"cannot create {self.where}: {describe_error(exc)}") from None
        self._create_index(client)
        log.info("created %s (%s, %s %s)", self.where, fields[1].describe(), self.config.index_type,
                 self.config.metric)

    def _create_index(self, client: Any, *, vector: bool = True, sparse: bool = True) -> None:
        index = client.prepare_index_params()
        if vector:
            index.add_index(field_name=self.config.vector_field, index_type=self.config.index_type,
                            metric_type=self.config.metric, params=dict(self.config.index_params))
        if sparse and self.config.bm25:
            add_bm25_index(index, self.config.sparse_field)
        # sync=False: waiting here asks for AllocTimestamp, which Milvus Lite lacks; commit waits instead
        self._call("create_index", lambda: client.create_index(self.collection, index, timeout=RPC_TIMEOUT_S,
                                                               sync=False))

    def _check_properties(self, properties: dict[str, Any], info: SinkStartInfo) -> None:
        # collections made elsewhere have no embedder.* properties: their schema check is all there is
        ours = {"model": info.model, "task": info.task or "", "dimensions": str(info.dimensions)}
        for key, value in ours.items():
            stored = properties.get(f"embedder.{key}")
            if stored is not None and stored != value:
                raise SinkError(f"{self.where} holds vectors of {key} {stored!r}, this job's {key} is {value!r}; "
                                "vectors of different models or tasks cannot share a collection. Nothing was "
                                "written; drop the collection or set another sink collection name")

    def _ensure_index(self, client: Any) -> None:
        vector_field, sparse_field = self.config.vector_field, self.config.sparse_field
        if self.config.bm25 and not client.list_indexes(self.collection, field_name=sparse_field):
            self._create_index(client, vector=False)  # a BM25 collection created elsewhere without its index
        names = self._call("list_indexes", lambda: client.list_indexes(self.collection, field_name=vector_field))
        if not names:  # a collection created elsewhere without an index
            self._create_index(client, sparse=False)
            names = client.list_indexes(self.collection, field_name=vector_field)
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:  # a server builds the index in the background after the flush; Milvus Lite at once
            state = client.describe_index(self.collection, names[0])
            if str(state.get("state", "Finished")) == "Failed":
                raise SinkError(f"{self.where}: building the index failed: {state.get('index_state_fail_reason')}")
            if str(state.get("state", "Finished")) == "Finished" or not state.get("pending_index_rows"):
                return
            if time.monotonic() >= deadline:
                log.warning("%s: index still building after %.0fs; counting anyway", self.where, INDEX_WAIT_S)
                return
            _sleep(1.0)

    def _upsert(self, encoded: ms.EncodedTable, start: int, stop: int) -> None:
        client = self._open()
        if self.fast_path and hasattr(client, "_get_connection") and hasattr(client, "_generate_call_context"):
            from pymilvus.grpc_gen import milvus_pb2

            request = milvus_pb2.UpsertRequest(collection_name=self.collection, db_name=self.config.db_name,
                                               num_rows=stop - start)
            request.fields_data.extend(encoded.field_data(start, stop))
            # schema= spares pymilvus a describe_collection per request; it sends upsert_param as given
            result = client._get_connection().upsert(self.collection, [], upsert_param=request,
                                                     schema=self._described, timeout=RPC_TIMEOUT_S,
                                                     context=client._generate_call_context())
            upserted = result.upsert_count
        else:
            upserted = client.upsert(self.collection, encoded.rows_dicts(start, stop),
                                     timeout=RPC_TIMEOUT_S)["upsert_count"]
        if upserted != stop - start:
            raise SinkError(f"{self.where}: Milvus upserted {upserted} of {stop - start} rows")

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """``action()``, tried up to ``WRITE_ATTEMPTS`` times on transient errors with capped, jittered backoff.
        Upserts are idempotent, so a retried request that had partly landed leaves no duplicate."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return action()
            except SinkError:
                raise
            except Exception as exc:  # classified just below
                if not is_transient(exc) or attempt == WRITE_ATTEMPTS:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise SinkError(f"{self.where}: {what} failed{tries}: {describe_error(exc)}") from None
                delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning("%s: %s failed (%s); retrying in %.1fs", self.where, what, describe_error(exc), delay)
                self.retries.add(retry.MILVUS_CALL)
                _sleep(delay)
        raise AssertionError("unreachable")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # a connection never travels to another process

    def __repr__(self) -> str:
        return f"MilvusSink({mask_uri(self.uri)!r}, collection={self.collection!r})"
