"""Shared helpers of the benchmark programs: corpus, job file, running ``embedder run`` and measuring it.

Not a benchmark itself. Everything here talks only to loopback (the local stand-in server) and every loop is
bounded by a deadline. ``psutil`` and ``matplotlib`` come from the ``bench`` extra (``pip install -e ".[bench]"``).
Job files are written and local multi-node Ray clusters started with the harness the tests use too
(``embedder.testing``: ``write_job``, ``RayCluster``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from embedder.testing import MODEL, write_job

FAKE_KEY = "jina_" + "bench" * 12  # the shape of a real key (65 characters), never a real one
REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("EMBEDDER_BENCH_CACHE", tempfile.gettempdir())) / "embedder-bench"


# --- the machine ----------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = "?"
    return {"nproc": os.cpu_count(), "memory": memory, "cpu": cpu, "python": platform.python_version(),
            "ray": ray_version}


def print_machine() -> None:
    info = machine_info()
    print(f"machine: {info['nproc']} cores, {info['memory']}, {info['cpu']}; Python {info['python']}, "
          f"Ray {info['ray']}", flush=True)


# --- corpus and job file ----------------------------------------------------------------------------------------
def corpus(rows: int, words: int, *, files: int = 4, row_group_rows: int = 5000,
           cache: Path = DEFAULT_CACHE) -> Path:
    """A generated Parquet corpus, cached by its parameters (generating 1M rows takes ~20-60 s)."""
    from embedder.cli.sample_corpus import write_parquet_corpus

    path = cache / f"corpus-{rows}r-{words}w-{files}f-{row_group_rows}g"
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        write_parquet_corpus(str(path), rows, files=files, row_group_rows=row_group_rows, words_per_doc=words)
        (path / ".complete").write_text("ok")
        print(f"corpus: generated {rows:,} rows of ~{words} words in {time.perf_counter() - started:.1f} s "
              f"at {path}", flush=True)
    return path


def documents(count: int, tokens: int, *, files: int = 4, cache: Path = DEFAULT_CACHE) -> Path:
    """A generated Parquet corpus of ``count`` long documents (paragraphs of sentences) of about ``tokens`` tokens
    each (0.5x to 2x), cached by its parameters."""
    import pyarrow.parquet as pq

    from embedder.cli.sample_corpus import generate_documents

    path = cache / f"documents-{count}d-{tokens}t-{files}f"
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        per_file = -(-count // files)
        for number in range(files):
            rows = min(per_file, count - number * per_file)
            if rows > 0:
                table = generate_documents(rows, min_tokens=tokens // 2, max_tokens=tokens * 2,
                                           start=number * per_file)
                pq.write_table(table, path / f"part-{number:04d}.parquet", row_group_size=500)
        (path / ".complete").write_text("ok")
    return path


def job_file(path: Path, *, source: Path, output: Path, rpm: int, tpm: int, max_concurrency: int,
             workers: int = 2, cpus_per_worker: float = 0.25, shard_rows: int = 5000, dimensions: int = 1024) -> Path:
    """A job file (written with ``tomli_w``): the Parquet corpus ``source`` → Parquet in ``output``."""
    return write_job(path,
                     source={"path": source, "format": "parquet", "shard_rows": shard_rows},
                     embedding={"model": MODEL, "task": "retrieval.passage", "dimensions": dimensions},
                     limits={"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency},
                     workers={"count": workers, "cpus_per_worker": cpus_per_worker},
                     sink={"kind": "parquet", "path": output},
                     progress={"interval_s": 5.0})


def job_env(api_base: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"JINA_API_KEY": FAKE_KEY, "JINA_API_BASE": api_base, "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1"})
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def embedder_command(job: Path, overrides: Sequence[str] = (), *flags: str) -> list[str]:
    sets = [arg for item in overrides for arg in ("--set", item)]
    return [sys.executable, "-m", "embedder", "run", str(job), *sets, *flags]


# --- measuring a process tree -----------------------------------------------------------------------------------
def classify(proc: Any, root_pid: int) -> str:
    """``driver`` (the ``embedder run`` process), ``actor`` (Ray worker processes: ``ray::...``), or ``ray``
    (Ray's own services: gcs_server, raylet, agents, log monitor, ...)."""
    if proc.pid == root_pid:
        return "driver"
    try:
        name = proc.name()
        cmdline = " ".join(proc.cmdline()[:3])
    except Exception:
        return "ray"
    if name.startswith("ray::") or cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "actor"
    return "ray"


ACTOR_TITLES = ("ray::RayEmbedWorker", "ray::SinkWriter", "ray::LimiterActor", "ray::IDLE", "ray::DashboardAgent",
                "ray::RuntimeEnvAgent")


def title(proc: Any, root_pid: int) -> str:
    """A short stable name: ``driver``, ``ray::RayEmbedWorker`` (method suffix dropped), ``raylet``, ..."""
    if proc.pid == root_pid:
        return "driver"
    try:
        name = proc.name()
        args = proc.cmdline()
    except Exception:
        return "?"
    head = args[0] if args else name
    if head.startswith("ray::"):
        head = head.split(".")[0].split(" ")[0]
        # the title may be read cut short (the kernel's 15-character comm): complete it from the known ones
        return next((known for known in ACTOR_TITLES if known.startswith(head)), head)
    for arg in args[1:3]:
        if arg.endswith(".py"):
            return os.path.basename(arg)
    return os.path.basename(head)


class BackgroundLoop:
    """``start()`` runs ``_loop`` (which returns once ``_stop`` is set) in a daemon thread; ``stop()`` ends it."""

    THREAD_NAME = "background-loop"
    _stop: threading.Event
    _thread: threading.Thread | None

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.THREAD_NAME)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class TreeSample:
    t: float
    rss: dict[str, int]  # category -> bytes
    cpu: dict[str, float]  # category -> cumulative CPU seconds (processes seen so far, dead ones at last value)
    processes: int
    shmem: dict[str, int] = field(default_factory=dict)  # category -> shared-memory bytes within rss


@dataclass
class TreeMonitor(BackgroundLoop):
    """Samples the CPU time and resident memory of a process and all its descendants every ``interval`` s.

    CPU seconds of a process that exits are kept at their last sampled value (at most ``interval`` of its CPU
    is missed, at its very end). RSS is summed per category at each sample; peaks are of those sums.
    """

    root_pid: int
    interval: float = 0.2
    exclude: set[int] = field(default_factory=set)
    extra_roots: Sequence[int] = ()
    samples: list[TreeSample] = field(default_factory=list)
    _cpu: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)
    _names: dict[tuple[int, float], str] = field(default_factory=dict)
    _titles: dict[tuple[int, float], str] = field(default_factory=dict)
    _peak_rss: dict[tuple[int, float], int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    THREAD_NAME = "tree-monitor"

    def _processes(self) -> list[Any]:
        import psutil

        found: dict[int, Any] = {}
        for pid in (self.root_pid, *self.extra_roots):
            try:
                root = psutil.Process(pid)
                found[pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                continue
        return [proc for pid, proc in found.items() if pid not in self.exclude]

    def sample(self) -> TreeSample:
        rss: dict[str, int] = {"driver": 0, "actor": 0, "ray": 0}
        shmem: dict[str, int] = {"driver": 0, "actor": 0, "ray": 0}
        processes = self._processes()
        for proc in processes:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    category = self._names.get(key) or classify(proc, self.root_pid)
                    self._names[key] = category
                    name = title(proc, self.root_pid)
                    if name != "?":  # a dying process may no longer tell its title
                        self._titles[key] = name
                    times = proc.cpu_times()
                    self._cpu[key] = (category, times.user + times.system)
                    resident = proc.memory_info().rss
                    rss[category] += resident
                    shmem[category] += _rss_shmem(proc.pid)
                    self._peak_rss[key] = max(self._peak_rss.get(key, 0), resident)
            except Exception:
                continue
        cpu: dict[str, float] = {"driver": 0.0, "actor": 0.0, "ray": 0.0}
        for category, seconds in self._cpu.values():
            cpu[category] += seconds
        sample = TreeSample(time.monotonic() - self.started, rss, cpu, len(processes), shmem)
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def cpu(self) -> dict[str, float]:
        return self.samples[-1].cpu if self.samples else {"driver": 0.0, "actor": 0.0, "ray": 0.0}

    def peak_rss(self, categories: Sequence[str] = ("driver", "actor"), *, private: bool = False) -> int:
        """Peak over samples of the summed RSS of ``categories``; ``private``: without shared-memory pages
        (RssShmem: the Ray object store's pages a process touched), i.e. RssAnon + RssFile."""
        return max((sum(s.rss[c] - (s.shmem.get(c, 0) if private else 0) for c in categories)
                    for s in self.samples), default=0)

    def by_title(self) -> dict[str, tuple[int, float, int]]:
        """Process title -> (processes, CPU seconds, largest RSS of one of them)."""
        out: dict[str, tuple[int, float, int]] = {}
        for key, (_, seconds) in self._cpu.items():
            name = self._titles.get(key, "?")
            if name.endswith("default_worker.py"):
                name = "ray::IDLE"  # a Ray worker process that never ran an actor or task
            count, total, peak = out.get(name, (0, 0.0, 0))
            out[name] = (count + 1, total + seconds, max(peak, self._peak_rss.get(key, 0)))
        return dict(sorted(out.items(), key=lambda item: -item[1][1]))


def _rss_shmem(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("RssShmem:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


# --- running a job ----------------------------------------------------------------------------------------------
@dataclass
class JobRun:
    returncode: int
    wall_s: float
    log: str
    monitor: TreeMonitor | None
    interrupted: bool = False

    def report(self, checkpoint: Path) -> dict[str, Any]:
        path = checkpoint / "run_report.json"
        return json.loads(path.read_text()) if path.exists() else {}


def run_job(command: list[str], env: dict[str, str], *, timeout_s: float, log_path: Path,
            monitor: bool = False, monitor_interval: float = 0.2, stop_after_s: float | None = None,
            on_tick: Any = None, on_start: Any = None) -> JobRun:
    """Run ``embedder run`` as a subprocess, bounded by ``timeout_s`` (then SIGINT, then SIGKILL).

    ``stop_after_s`` sends SIGINT (Ctrl-C: the job keeps what it finished and exits 130) after that many seconds;
    so does ``on_tick(elapsed)``, called about once a second while the job runs, when it returns True.
    ``on_start(pid)`` is called once the process started.
    """
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(REPO), start_new_session=True)
    mon = TreeMonitor(proc.pid, interval=monitor_interval).start() if monitor else None
    if on_start is not None:
        on_start(proc.pid)
    interrupted = False
    deadline = started + timeout_s
    next_tick = started + 1.0
    try:
        while proc.poll() is None:
            now = time.monotonic()
            stop = False
            if on_tick is not None and now >= next_tick:
                stop = bool(on_tick(now - started))
                next_tick += 1.0
            if not interrupted and (stop or now >= deadline or
                                    (stop_after_s is not None and now - started >= stop_after_s)):
                interrupted = True
                proc.send_signal(signal.SIGINT)
                deadline = now + 60.0  # a bounded grace period for a clean stop
                stop_after_s = None
            elif interrupted and now >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if mon is not None:
            mon.stop()
    wall = time.monotonic() - started
    return JobRun(proc.returncode, wall, log_path.read_text(errors="replace"), mon, interrupted)


# --- the stand-in server's counters -----------------------------------------------------------------------------
@dataclass
class StatsPoller(BackgroundLoop):
    """``GET /stats`` of the local server every ``interval`` seconds, in a thread: (elapsed, stats) pairs."""

    server: Any
    interval: float = 1.0
    series: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    THREAD_NAME = "stats-poller"

    def _loop(self) -> None:
        import httpx

        with httpx.Client(base_url=self.server.root_url, timeout=5.0, trust_env=False) as http:
            tick = self.started
            while not self._stop.is_set():
                with contextlib.suppress(Exception):
                    self.series.append((time.monotonic() - self.started, http.get("/stats").json()))
                tick += self.interval
                self._stop.wait(max(0.0, tick - time.monotonic()))

    def start(self) -> Self:
        self.started = time.monotonic()
        return super().start()


def at(series: list[tuple[float, dict[str, Any]]], t: float, key: str) -> float:
    """The value of counter ``key`` at elapsed time ``t`` (the last sample at or before it)."""
    value = 0.0
    for stamp, stats in series:
        if stamp > t:
            break
        value = stats.get(key, 0)
    return float(value)


def rolling(series: list[tuple[float, dict[str, Any]]], key: str, window: float = 60.0) -> list[tuple[float, float]]:
    """(t, counter(t) - counter(t - window)) for every sample: the rolling per-window amount."""
    out = []
    j = 0
    for stamp, stats in series:
        while j < len(series) and series[j][0] <= stamp - window:
            j += 1
        base = series[j - 1][1].get(key, 0) if j > 0 else 0
        out.append((stamp, float(stats.get(key, 0) - base)))
    return out


@contextlib.contextmanager
def workdir(keep: bool, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
