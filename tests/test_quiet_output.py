"""What ``embedder run`` prints: quiet by default (no third-party or Ray-internal lines, no traceback) whether the
run completes, is refused by the API (401) or is interrupted (SIGINT); loud with ``--debug``. Its progress: a
``rich`` bar under a pseudo-terminal, plain labelled lines through a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from jobtools import PYTHON, CliProcess, corpus_rows, done_ids, wait_for, write_parquet

from embedder.testing import fault_job, kill_process_group, wait_group_gone

pytestmark = [pytest.mark.slow, pytest.mark.ray]

NOISE = re.compile(r"httpx|httpcore|HTTP Request|faiss|grpc|GOAWAY|too_many_pings|\(raylet\)|raylet|"
                   r"Unhandled error|Traceback", re.I)
"""Lines that must not reach a user without --debug: third-party loggers, gRPC, Ray internals, tracebacks."""
COST = re.compile(r"spent \$\d+\.\d{4} · projected total \$\d+\.\d{4}")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = "\u2501"  # the heavy horizontal line rich draws its bar with


def noise(text: str) -> list[str]:
    # the effective configuration names the Milvus sink's file, which is not noise
    return [line for line in text.splitlines() if NOISE.search(line) and "milvus.db" not in line]


def command(job: Path, *args: str, debug: bool = False) -> list[str]:
    return [PYTHON, "-m", "embedder", *(["--debug"] if debug else []), "run", str(job), *args]


def make_job(tmp_path: Path, name: str, rows: int = 2000, *, sinks=("parquet",), **options) -> tuple[Path, Path]:
    source = tmp_path / f"{name}.parquet"
    write_parquet(source, corpus_rows(rows))
    out = tmp_path / name
    return fault_job(tmp_path / f"{name}.toml", source, out, sinks=sinks, shard_rows=250, **options), out


def test_a_completed_run_into_parquet_and_milvus_is_quiet_and_prints_plain_progress(tmp_path, jina, env):
    job, _ = make_job(tmp_path, "done", sinks=("parquet", "milvus"))
    result = CliProcess(command(job), env, tmp_path).wait()
    assert result.returncode == 0, result.describe()
    assert not noise(result.output), noise(result.output)
    plain = [line for line in result.stderr.splitlines() if line.startswith("[embedder] ")]
    assert plain, result.describe()
    assert all(COST.search(line) and "tokens/min (last 60 s)" in line for line in plain), plain
    assert "100.0%" in plain[-1]
    assert BAR not in result.output and "\x1b[" not in result.output  # no terminal codes into a pipe
    assert "embedder: completed" in result.stderr and "embedded 2,000 documents" in result.stderr


def test_a_401_run_is_one_clear_message_and_debug_shows_the_details(tmp_path, jina, env):
    job, _ = make_job(tmp_path, "refused", rows=1000)
    jina.configure(revoked=True)
    quiet = CliProcess(command(job), env, tmp_path).wait()
    assert quiet.returncode == 1, quiet.describe()
    assert not noise(quiet.output), noise(quiet.output)
    assert "Invalid API key" in quiet.stderr and "embedder: failed" in quiet.stderr

    loud = CliProcess(command(job, debug=True), env, tmp_path).wait()
    assert loud.returncode == 1, loud.describe()
    assert "HTTP Request: POST" in loud.output  # httpx, from the workers
    assert re.search(r"POST \S+/embeddings .*status=401", loud.output)  # our per-request line


def test_an_interrupted_run_is_quiet(tmp_path, jina, env):
    job, out = make_job(tmp_path, "interrupted", rows=4000, embedding={"batch_size": 50},
                        limits={"rpm": 100_000, "tpm": 100_000_000, "max_concurrency": 2})
    jina.configure(latency_ms=150)
    run = CliProcess(command(job), env, tmp_path)
    try:
        wait_for(lambda: done_ids(str(out / "_checkpoint")) or not run.running(), timeout=120, what="a done marker")
        assert run.running(), "the run finished before the interrupt: make it slower"
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    finally:
        result = run.wait()
    assert result.returncode == 130, result.describe()
    assert not noise(result.output), noise(result.output)
    assert "interrupted" in result.stderr


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 240.0) -> tuple[int, str]:
    """Run ``argv`` with its stdout and stderr on a pseudo-terminal (120 columns); its exit code and output."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if not wait_group_gone(proc.pid, 15):
            kill_process_group(proc.pid)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_the_progress_is_a_rich_bar(tmp_path, jina, env):
    job, _ = make_job(tmp_path, "tty", rows=2000)
    jina.configure(latency_ms=50)
    code, output = run_in_pty(command(job), {**env, "TERM": "xterm-256color"}, tmp_path)
    assert code == 0, output[-4000:]
    assert BAR in output and "embedding" in output
    text = " ".join(ANSI.sub("", output).split())  # the figures wrap at the terminal's width
    assert COST.search(text) and "tokens/min (last 60 s)" in text, text[-3000:]
    assert "[embedder] " not in output  # the bar replaces the plain lines
    assert not noise(output), noise(output)
