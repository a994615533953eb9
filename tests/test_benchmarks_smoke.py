"""Every benchmark program still runs and prints its figures (at a tiny size, so they cannot rot unnoticed).

The figures themselves are not checked here (a tiny run on a shared machine says nothing about them): see
docs/benchmarks.md for the full-size runs. Each program runs as a subprocess, as a person would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def run_program(name: str, *args: str, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JINA"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{output[-4000:]}"
    return output


def figures(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FIGURE ")]


@pytest.fixture(scope="module")
def psutil_installed() -> None:
    pytest.importorskip("psutil", reason="the bench extra (pip install -e '.[bench]') measures processes")


def test_client_decode() -> None:
    output = run_program("client_decode.py", "--vectors", "64", "--repeat", "1")
    assert "base64 / float decode speed" in output


def test_mock_server_throughput() -> None:
    output = run_program("mock_server_throughput.py", "--requests", "8", "--inputs", "16", "--concurrency", "2")
    assert "vectors/s" in output


def test_quota_use(tmp_path: Path) -> None:
    output = run_program("quota_use.py", "--minutes", "0.2", "--burst-s", "5", "--tpm", "200000",
                         "--csv", str(tmp_path / "q.csv"), "--png", str(tmp_path / "q.png"))
    lines = figures(output)
    assert any("achieved/limit" in line for line in lines), output[-3000:]
    assert any("429s per 100 requests" in line for line in lines), output[-3000:]
    assert (tmp_path / "q.csv").read_text().startswith("t_s,")


def test_client_cost(psutil_installed: None) -> None:
    output = run_program("client_cost.py", "--rows", "1500", "--rows-small", "500")
    lines = figures(output)
    assert any("per-document CPU" in line for line in lines), output[-3000:]
    assert any("end-to-end" in line for line in lines), output[-3000:]


def test_compare_pipelines() -> None:
    output = run_program("compare_pipelines.py", "--rows", "600", "--batch", "100")
    lines = figures(output)
    for name in ("job", "seed", "ray-data"):
        assert any(line.startswith(f"FIGURE compare_pipelines[{name}]") for line in lines), output[-3000:]


def test_ray_data() -> None:
    output = run_program("ray_data.py", "--rows", "64", "--rpm", "6000", "--map-batch", "16")
    lines = figures(output)
    for name in ("jinaembed", "paced-udf"):
        assert any(line.startswith(f"FIGURE ray_data[{name}]") and "rows = 64" in line for line in lines), \
            output[-3000:]


def test_memory_scale(psutil_installed: None) -> None:
    output = run_program("memory_scale.py", "--rows-small", "500", "--rows-large", "1500")
    assert any("peak RSS (driver + actors)" in line for line in figures(output)), output[-3000:]


def test_resume() -> None:
    output = run_program("resume.py", "--rows", "1000", "--repeat", "1")
    lines = figures(output)
    assert any("rerun wall time" in line for line in lines), output[-3000:]
    assert any("API requests during reruns = 0" in line for line in lines), output[-3000:]


def test_chunking(psutil_installed: None) -> None:
    output = run_program("chunking.py", "--docs", "40", "--docs-small", "10", "--tokens", "800")
    lines = figures(output)
    for figure in ("splitter", "job CPU", "end-to-end", "at 100M tokens/min"):
        assert any(line.startswith(f"FIGURE chunking {figure}") for line in lines), output[-3000:]


def test_splitters() -> None:
    output = run_program("splitters.py", "--docs", "6", "--repeat", "1")
    assert any(line.startswith("FIGURE splitter semantic-text-splitter overlap 0") for line in figures(output))
