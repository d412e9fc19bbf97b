"""Shared fixtures for the test suite (pytester is enabled in pyproject's addopts)."""

from __future__ import annotations

from typing import Callable

import pytest
from httpclient import HttpResult, http


@pytest.fixture
def call() -> Callable[..., HttpResult]:
    """The real-HTTP ``http()`` helper of ``httpclient.py`` as a fixture."""
    return http
