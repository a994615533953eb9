"""A Ray cluster on this machine for tests and benchmarks: ``ray start --head`` plus worker nodes joined with
``ray start --address``, each node in its own process group and short temp dir, every address on loopback.

Token auth stays on (Ray 2.60's default): the cluster gets a fresh token in ``RAY_AUTH_TOKEN`` with
``RAY_AUTH_MODE=token``, and every client (``embedder run``, ``ray job submit``, helper scripts) is given the same
two variables through :meth:`RayCluster.client_env`. Extra ``env`` (for example the API key) goes into the
environment of ``ray start``, which the raylet, the workers and submitted job drivers inherit.

Ray itself is never imported here: the cluster is driven through the ``ray`` CLI in subprocesses, and Python
that needs Ray (:meth:`RayCluster.python`) runs in a subprocess too. The cluster is stopped by killing its
process groups and whatever still uses its temp dirs, never with ``ray stop`` (which stops every Ray process of
the user on the machine, other people's clusters included).

    with RayCluster(dashboard=True, num_cpus=1) as cluster:
        node = cluster.add_node(num_cpus=2, resources={"worker_node": 1})
        env = cluster.client_env(base_env, connect=True)   # RAY_ADDRESS, the token, loopback
        ...
        node.kill()                                        # the node is lost
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from embedder.testing.processes import find_process, free_port, kill_process_group, kill_processes_using, short_tmpdir

PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 180.0
"""No ``ray start`` may take longer (a shared 2-core machine can take a minute)."""

JOIN_ON_LOOPBACK = (
    # `ray start --address` refuses to join a cluster when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the switch that
    # keeps Ray on 127.0.0.1), and with it on, Ray rewrites 127.0.0.1 to the machine's outside address. So
    # this one `ray start` allows joining and keeps every address on loopback; the processes it starts inherit
    # the "=0" environment and stay on loopback by themselves.
    "import sys; import ray._private.ray_constants as c; import ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.node_ip_address_from_perspective = lambda *a, **k: '127.0.0.1'; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


def without_ray_env(base: Mapping[str, str] | None = None, *, drop: Sequence[str] = ()) -> dict[str, str]:
    """``base`` (default: this process's environment) without ``RAY_*`` variables, nor those starting with any
    of ``drop``."""
    prefixes = ("RAY_", *drop)
    return {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(prefixes)}


class RayNode:
    """One ``ray start`` on this machine (the head or a worker node): its temp dir and its process group."""

    def __init__(self, *, num_cpus: int, resources: Mapping[str, float] | None = None, prefix: str = "rt") -> None:
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.temp_dir = short_tmpdir(prefix)
        self.metrics_export_port = free_port()
        self.pgid: int | None = None
        self.start_output = ""

    def start_args(self) -> list[str]:
        """The options of ``ray start`` every node gets: CPUs, resources, temp dir, loopback, free ports (Ray
        would otherwise take fixed numbers, where another cluster on this machine may already be)."""
        args = [f"--num-cpus={self.num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                "--node-ip-address=127.0.0.1", f"--metrics-export-port={self.metrics_export_port}",
                f"--dashboard-agent-listen-port={free_port()}"]
        if self.resources:
            args.append(f"--resources={json.dumps(self.resources)}")
        return args

    def start(self, command: list[str], env: Mapping[str, str], *, what: str,
              timeout: float = START_TIMEOUT_S) -> None:
        """Run ``command`` (a ``ray start``) in a new session, so the daemons it leaves running stay in its
        process group; stopped again if it fails (``RuntimeError``, with its output)."""
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env), start_new_session=True, cwd=self.temp_dir)
        self.pgid = proc.pid
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"{what} did not finish within {timeout:.0f} s") from None
        self.start_output = out.decode(errors="replace")
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"{what} failed ({proc.returncode}):\n{self.start_output[-4000:]}")

    def kill(self) -> None:
        """The node is lost: SIGKILL its whole process group at once."""
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)

    def stop(self) -> None:
        """Its process group (SIGTERM, then SIGKILL), then whatever still uses its temp dir (Ray's workers start
        sessions of their own); the temp dir is removed."""
        if self.pgid is not None:
            kill_process_group(self.pgid, grace_s=3.0)
            self.pgid = None
        kill_processes_using(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def raylet_pid(self) -> int | None:
        """The node's raylet (found by the node's temp dir on its command line), if it runs."""
        return find_process("raylet", self.temp_dir)


class RayCluster:
    """``ray start --head`` on loopback with its own temp dir, process group and token; worker nodes join with
    :meth:`add_node`. A context manager: started on entry, every node stopped on exit.

    ``num_cpus`` and ``resources`` are the head's; ``dashboard`` starts the dashboard (on 127.0.0.1, a free port:
    :attr:`dashboard_url`), which serves the state API and ``ray job submit``; ``env`` is added to the
    environment of every ``ray start`` (the raylets, their workers and submitted job drivers inherit it).
    """

    def __init__(self, *, num_cpus: int = 2, resources: Mapping[str, float] | None = None, dashboard: bool = False,
                 env: Mapping[str, str] | None = None) -> None:
        self.dashboard = dashboard
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.dashboard_port = free_port()
        self.token = secrets.token_hex(32)
        self.head = RayNode(num_cpus=num_cpus, resources=resources, prefix="rt")
        self.nodes: list[RayNode] = []
        """The worker nodes, in the order they joined."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def temp_dir(self) -> str:
        """The head's temp dir (its session logs are below it)."""
        return self.head.temp_dir

    @property
    def start_output(self) -> str:
        """What ``ray start --head`` printed."""
        return self.head.start_output

    def client_env(self, base: Mapping[str, str] | None = None, *, connect: bool = False) -> dict[str, str]:
        """``base`` (default: this process's environment) without its ``RAY_*`` variables, plus what a client of
        this cluster needs: the token, loopback, no usage stats, this interpreter first on ``PATH`` (``python`` in
        a submitted job's entrypoint is looked up on the raylet's PATH); with ``connect``, ``RAY_ADDRESS`` too
        (what ``embedder run`` needs to join the cluster instead of starting its own)."""
        env = without_ray_env(base)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                   RAY_USAGE_STATS_ENABLED="0")
        env["PATH"] = os.pathsep.join([os.path.dirname(PYTHON), env.get("PATH", "")])
        if connect:
            env["RAY_ADDRESS"] = self.address
        return env

    def node_env(self) -> dict[str, str]:
        """The environment of ``ray start``: no ``RAY_*`` nor ``JINA*`` variable of this process, the cluster's
        token, and the extra ``env``."""
        return {**self.client_env(without_ray_env(drop=("JINA",))), **self.extra_env}

    def start(self) -> RayCluster:
        command = [RAY, "start", "--head", f"--port={self.port}", *self.head.start_args(),
                   f"--include-dashboard={'true' if self.dashboard else 'false'}",
                   # not at its fixed number (10001), where another cluster on this machine may already be
                   f"--ray-client-server-port={free_port()}"]
        if self.dashboard:
            command += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        self.head.start(command, self.node_env(), what="ray start --head")
        return self

    def add_node(self, *, num_cpus: int = 2, resources: Mapping[str, float] | None = None) -> RayNode:
        """A worker node joined to the head with ``ray start --address``, in its own process group and temp dir;
        :meth:`RayNode.kill` loses it, :meth:`stop` stops it with the rest."""
        node = RayNode(num_cpus=num_cpus, resources=resources, prefix="rn")
        self.nodes.append(node)
        node.start([PYTHON, "-c", JOIN_ON_LOOPBACK, "start", f"--address={self.address}", *node.start_args()],
                   self.node_env(), what="ray start --address (a worker node)")
        return node

    def stop(self) -> None:
        """The worker nodes (last joined first), then the head."""
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()
        self.head.stop()

    def raylet_pids(self) -> list[int]:
        """The raylet of each node that has one running: the head's first, then the worker nodes' in join order."""
        return [pid for node in (self.head, *self.nodes) if (pid := node.raylet_pid()) is not None]

    def python(self, code: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a fresh Python (a client of this cluster); it gets the address as ``sys.argv[1]``
        (``ray.init(address=sys.argv[1])``), then ``args``."""
        return self._client([PYTHON, "-c", code, self.address, *args], timeout)

    def ray(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """The ``ray`` CLI as a client of this cluster (``ray job submit --address <dashboard_url> ...``)."""
        return self._client([RAY, *args], timeout)

    def _client(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        env = self.client_env(without_ray_env(drop=("JINA",)))
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
