"""Storage errors translated in one place and retried with named limits: the classification of what the operating
system and pyarrow's S3 client really raise (S3 errors produced by moto behind the fault proxy), the backoff
and the counting (with a fake clock), and a heartbeat that fails on a real disk."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from s3tools import moto_server, s3_filesystem

from embedder import storage
from embedder.errors import EmbedderError, StorageError, StoragePermanent, StorageTransient
from embedder.ledger import Heartbeat, Ledger, Progress
from embedder.run.resilience import HeartbeatWriter, SinkDeaths
from embedder.storage import retry
from embedder.storage.errors import is_transient, translate
from embedder.storage.locations import PYARROW_S3_ATTEMPTS
from embedder.testing.s3_faults import S3FaultProxy


class FakeClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def failing(errors: list[BaseException], result: str = "ok"):
    """A callable that raises ``errors`` one per call, then returns ``result``."""
    calls = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


# --- classification -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "transient"), [
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),
    (PermissionError(errno.EACCES, "Permission denied"), False),
    (OSError(errno.EROFS, "Read-only file system"), False),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
    (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), True),
    (pa.ArrowInvalid("Parquet magic bytes not found in footer"), False),
    (OSError("something nobody understood"), False),
])
def test_operating_system_and_arrow_errors(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
    error = translate(exc, retry.PART_WRITE, "/data/out/part-1.parquet")
    assert isinstance(error, StorageTransient if transient else StoragePermanent)
    assert isinstance(error, EmbedderError) and error.retryable is transient
    assert str(error).startswith("storage part write failed for /data/out/part-1.parquet: ")


def test_no_space_left_names_the_errno() -> None:
    error = translate(OSError(errno.ENOSPC, "No space left on device"), retry.PART_WRITE, "/mnt/out/part-a.parquet")
    assert "No space left on device (ENOSPC)" in str(error) and "(permanent)" in str(error)


@pytest.fixture(scope="module")
def s3_proxy(tmp_path_factory) -> Iterator[tuple[S3FaultProxy, pafs.S3FileSystem]]:
    """moto behind the fault proxy (no random faults) and a client of the proxy built like the job builds one."""
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint, \
            S3FaultProxy(endpoint, slowdown_rate=0, reset_rate=0, seed=1) as proxy:
        s3_filesystem(endpoint).create_dir("bucket")
        with s3_filesystem(endpoint).open_output_stream("bucket/x.json") as out:
            out.write(b"{}")
        fs, _ = storage.resolve("s3://bucket/x.json", {"endpoint_override": proxy.url, "region": "us-east-1",
                                                       "access_key": "test", "secret_key": "test"})
        yield proxy, fs


@pytest.mark.parametrize(("fault", "transient"), [
    ("slowdown", True), ("internal", True), ("reset", True), ("access_denied", False), ("no_such_key", False)])
@pytest.mark.parametrize("operation", ["put", "list"])
def test_real_s3_errors_from_pyarrow(s3_proxy, fault: str, transient: bool, operation: str) -> None:
    """What pyarrow's S3 client raises for S3's answers (its own retries are off: we see every one)."""
    proxy, fs = s3_proxy
    proxy.inject("reset_after" if fault == "reset" else fault)  # reset half way through the answer
    with pytest.raises(OSError) as raised:
        if operation == "put":
            storage.write_atomic(fs, "bucket/y.json", b"{}")
        else:
            storage.list_files(fs, "bucket")
    assert "AWS Error" in str(raised.value)
    assert is_transient(raised.value) is transient, str(raised.value)


def test_a_missing_key_and_a_503_on_a_read(s3_proxy) -> None:
    proxy, fs = s3_proxy
    with pytest.raises(FileNotFoundError) as missing:
        fs.open_input_file("bucket/missing.parquet")
    assert not is_transient(missing.value)
    proxy.inject("slowdown")  # a HEAD answered 503 without a body: "UNKNOWN (HTTP status 503)"
    with pytest.raises(OSError, match=r"HTTP status 503") as slow:
        fs.open_input_file("bucket/x.json")
    assert is_transient(slow.value)


def test_the_job_s_s3_filesystem_does_not_retry_by_itself(s3_proxy) -> None:
    proxy, fs = s3_proxy
    assert PYARROW_S3_ATTEMPTS == 1
    before = proxy.stats()["requests"]
    proxy.inject("slowdown")
    with pytest.raises(OSError, match="SLOW_DOWN"):
        storage.list_files(fs, "bucket")
    assert proxy.stats()["requests"] == before + 1


def test_our_retry_gets_through_s3_faults_and_counts_them(s3_proxy) -> None:
    proxy, fs = s3_proxy
    counter, clock = retry.RetryCounter(), FakeClock()
    proxy.inject("slowdown", 2)
    names = retry.call(retry.LEDGER_READ, "s3://bucket", lambda: storage.list_files(fs, "bucket"), counter=counter,
                       clock=clock)
    assert "x.json" in names and counter.counts() == {"ledger read": 2} and len(clock.sleeps) == 2


# --- retry ----------------------------------------------------------------------------------------------------

def test_transient_errors_are_retried_with_exponential_backoff_and_counted() -> None:
    fn = failing([ConnectionResetError(errno.ECONNRESET, "reset")] * 3)
    counter, clock = retry.RetryCounter(), FakeClock()
    limit = retry.Limit(attempts=5, base_s=1.0, max_s=3.0)
    assert retry.call("shard read", "s3://b/f.parquet", fn, counter=counter, clock=clock, limit=limit,
                      rng=random.Random(0)) == "ok"
    assert len(fn.calls) == 4 and counter.counts() == {"shard read": 3} and counter.total == 3
    bounds = [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0)]  # 1, 2, 4 capped at 3; each jittered into [half, all]
    assert all(low <= wait <= high for wait, (low, high) in zip(clock.sleeps, bounds, strict=True)), clock.sleeps


def test_a_permanent_error_is_not_retried_and_names_operation_and_path() -> None:
    fn = failing([PermissionError(errno.EACCES, "Permission denied")])
    clock = FakeClock()
    with pytest.raises(StoragePermanent) as raised:
        retry.call(retry.MANIFEST, "/out/_manifest.json", fn, clock=clock)
    assert len(fn.calls) == 1 and clock.sleeps == []
    assert raised.value.operation == "manifest" and raised.value.path == "/out/_manifest.json"
    assert str(raised.value) == ("storage manifest failed for /out/_manifest.json: Permission denied (EACCES) "
                                 "(permanent)")


def test_attempts_used_up_raise_a_transient_error_with_the_count() -> None:
    limit = retry.LIMITS[retry.HEARTBEAT]
    fn = failing([TimeoutError(errno.ETIMEDOUT, "timed out")] * 10)
    counter, clock = retry.RetryCounter(), FakeClock()
    with pytest.raises(StorageTransient, match=f"after {limit.attempts} attempts") as raised:
        retry.call(retry.HEARTBEAT, "/ckpt/heartbeat.json", fn, counter=counter, clock=clock)
    assert len(fn.calls) == limit.attempts and counter.counts() == {"heartbeat": limit.attempts - 1}
    assert raised.value.attempts == limit.attempts


def test_uncounted_retries_go_to_the_process_counter() -> None:
    before = retry.PROCESS.counts()
    retry.call(retry.LEDGER_MARKER, "/ckpt/done/s.json", failing([BrokenPipeError(errno.EPIPE, "pipe")]),
               clock=FakeClock())
    assert retry.PROCESS.since(before) == {"ledger marker": 1}


def test_every_named_limit_exists() -> None:
    for name in ("shard read", "part write", "manifest", "ledger marker", "heartbeat", "milvus call"):
        assert retry.LIMITS[name].attempts >= 2


def test_storage_errors_keep_their_fields_across_processes() -> None:
    error = translate(OSError(errno.ENOSPC, "No space left on device"), "part write", "/out/p.parquet", attempts=1)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is StoragePermanent and str(copy) == str(error)
    assert (copy.operation, copy.path, copy.reason) == ("part write", "/out/p.parquet", error.reason)
    counter = pickle.loads(pickle.dumps(retry.RetryCounter({"part write": 2})))
    assert counter.counts() == {"part write": 2}


# --- heartbeat on a real disk ---------------------------------------------------------------------------------

def test_a_failing_heartbeat_is_logged_once_per_streak_and_skipped(tmp_path: Path, caplog) -> None:
    ledger = Ledger.open(str(tmp_path / "ckpt"), "f" * 64, {"a": 1})
    beats = HeartbeatWriter(ledger)
    assert beats.write(Heartbeat(Progress(rows_done=1)))
    target = tmp_path / "ckpt" / "heartbeat.json"
    os.remove(target)
    (target / "blocked").mkdir(parents=True)  # the rename onto it fails: EISDIR, a real filesystem error
    caplog.set_level(logging.WARNING)
    assert [beats.write(Heartbeat(Progress(rows_done=n))) for n in range(3)] == [False, False, False]
    warnings = [r for r in caplog.records if "heartbeat skipped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "heartbeat.json" in warnings[0].getMessage() and beats.skipped == 3
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".tmp-")]
    (target / "blocked").rmdir()
    target.rmdir()
    assert beats.write(Heartbeat(Progress(rows_done=9)))
    assert ledger.read_heartbeat().progress.rows_done == 9
    assert any("written again after 3" in r.getMessage() for r in caplog.records)
    (tmp_path / "ckpt" / "heartbeat.json").unlink()
    (target / "blocked").mkdir(parents=True)
    assert not beats.write(Heartbeat(Progress()))
    assert len([r for r in caplog.records if "heartbeat skipped" in r.getMessage()]) == 2  # a new streak


# --- sink deaths ----------------------------------------------------------------------------------------------

def test_a_sink_death_is_charged_to_the_write_it_was_running() -> None:
    deaths = SinkDeaths()
    a, b, c = (deaths.submitted() for _ in range(3))
    pending = [(a, "a"), (b, "b"), (c, "c")]
    # the failures of one death arrive in any order: the oldest write is charged once
    assert deaths.charge(b, pending) == "a"
    assert deaths.charge(a, pending) is None and deaths.charge(c, pending) is None
    again = [deaths.submitted() for _ in range(3)]  # b, a, c sent again
    assert deaths.charge(again[1], list(zip(again, "bac", strict=True))) == "b"


def test_storage_error_is_an_embedder_error() -> None:
    assert issubclass(StorageError, EmbedderError) and StorageTransient.retryable and not StoragePermanent.retryable
