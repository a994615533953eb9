"""Shared fixtures. The local Jina-compatible server: one per test session, reset for every test using it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedder.mock_jina.testing import MockJinaServer

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
