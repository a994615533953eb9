"""Shared fixtures: the local Jina-compatible server (one per test session, reset for every test using it), a
private temp dir for the local Ray of each test's CLI runs, and the environment of those runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedder.mock_jina.testing import MockJinaServer
from embedder.testing import cli_env, private_ray_tmpdir

FAKE_API_KEY = "jina_" + "test" * 15  # the shape of a real key (65 characters), never a real one


@pytest.fixture(scope="session")
def mock_jina() -> Iterator[MockJinaServer]:
    """The local server for the whole session: no limits, no latency, no faults."""
    with MockJinaServer() as server:
        yield server


@pytest.fixture
def jina(mock_jina: MockJinaServer) -> MockJinaServer:
    """The session's local server, back to its start settings with zeroed stats and no queued faults."""
    mock_jina.restore()
    mock_jina.reset()
    return mock_jina


@pytest.fixture
def api_key() -> str:
    """A syntactically valid fake Jina key."""
    return FAKE_API_KEY


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """A short temp dir for the local Ray of the test's CLI runs (``RAY_TMPDIR``); whatever still uses it at the
    end of the test is stopped, and it is removed."""
    with private_ray_tmpdir() as path:
        yield path


@pytest.fixture
def env(jina: MockJinaServer, api_key: str, ray_tmp: str) -> dict[str, str]:
    """The environment of an ``embedder run`` subprocess: the fake key, the local server, the private Ray dir."""
    return cli_env(jina.url, api_key, ray_tmpdir=ray_tmp)
