"""Shared fixtures for the test suite (pytester is enabled in pyproject's addopts)."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from fake_fal_upstream import FakeFal
from httpclient import HttpResult, http


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
