"""Processes a test or a benchmark started, and only those: free loopback ports, short temp dirs, process groups.

Everything a test starts that may start more (``embedder run``, ``ray start``) runs in a new session, so its whole
tree shares one process group, and is stopped by killing that group — never with ``ray stop``, which would stop
every Ray process of the user on the machine, other people's clusters included. Ray's worker processes start
sessions of their own, so a group does not hold them; the temp dir they write their logs to does
(:func:`processes_using`). Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_tmpdir(prefix: str) -> str:
    """A short directory under /tmp: Ray puts Unix sockets below its temp dir, and their paths must stay short
    (107 bytes at most)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Whether process group ``pgid`` has no live member within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def kill_process_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the group, SIGKILL whatever is left after ``grace_s``; only this group, which the caller started."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if wait_group_gone(pgid, wait):
            return


def processes_using(directory: str) -> list[int]:
    """Processes with their working directory or an open file below ``directory`` (Ray's worker processes start
    sessions of their own, so a process group does not hold them; the temp dir they write logs to does)."""
    prefix = os.path.realpath(directory) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            links = [os.readlink(f"/proc/{entry}/cwd")]
            links += [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(link.startswith(prefix) for link in links):
            found.append(int(entry))
    return found


def kill_processes_using(directory: str, grace_s: float = 5.0) -> None:
    """What a Ray left running in its private temp dir: SIGTERM, then SIGKILL after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_using(directory)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if not pids:
            return
        deadline = time.monotonic() + grace_s
        while processes_using(directory) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextlib.contextmanager
def private_ray_tmpdir(prefix: str = "rt") -> Iterator[str]:
    """A short temp dir for a run's local Ray (``RAY_TMPDIR``); whatever still uses it afterwards is stopped, and
    the directory removed."""
    path = short_tmpdir(prefix)
    try:
        yield path
    finally:
        kill_processes_using(path)
        shutil.rmtree(path, ignore_errors=True)


def find_process(name: str, argument_part: str) -> int | None:
    """The first process whose name (``/proc/PID/comm``) is ``name`` and whose command line contains
    ``argument_part`` (e.g. a node's raylet, found by its temp dir), or None."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="utf-8", errors="replace") as handle:
                comm = handle.read().strip()
            if comm != name[:15]:  # the kernel keeps 15 characters of the name
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if argument_part in cmdline:
            return int(entry)
    return None
