"""Shared fixtures for the test suite (pytester is enabled in pyproject's addopts)."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from fake_fal_upstream import FakeFal
from httpclient import HttpResult, http
from pytest_httpserver import HTTPServer


@pytest.fixture
def call() -> Callable[..., HttpResult]:
    """The real-HTTP ``http()`` helper of ``httpclient.py`` as a fixture."""
    return http


@pytest.fixture
def fake() -> Iterator[FakeFal]:
    """A fake fal.ai upstream on 127.0.0.1 (one server answers every fal host)."""
    server = FakeFal().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    with server:
        yield server


@pytest.fixture
def receiver(receiver_server: HTTPServer) -> Iterator[HTTPServer]:
    """A loopback webhook receiver answering 200 on ``/hook`` (other paths per test)."""
    receiver_server.expect_request("/hook", method="POST").respond_with_json({"received": True})
    yield receiver_server
    receiver_server.clear()
