"""Shared fixtures for the test suite (pytester is enabled in pyproject's addopts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
from fake_fal_upstream import FakeFal
from httpclient import HttpResult, http
from pytest_httpserver import HTTPServer

from pytest_falmock import FalMock
from pytest_falmock._record import recorder_for
from pytest_falmock._secrets import Credentials
from pytest_falmock._settings import Settings, record_settings

#: The fal key the record tests capture (an id and a secret, as fal's keys are).
KEY = "fk-abcdef123456:s3cr3t-value-9876543210"
Make = Callable[..., FalMock]


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


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "fixtures" / "fal.json"


@pytest.fixture
def make(fake: FakeFal, target: Path) -> Iterator[Make]:
    """``make(mode="new", upstream=fake.url, key=KEY, **settings)``: a started, recording FalMock."""
    mocks: list[FalMock] = []

    def build(
        mode: str = "new", upstream: Optional[str] = "fake", key: Optional[str] = KEY, **kw: Any
    ) -> FalMock:
        settings = record_settings(
            mode,
            [target],
            fake.url if upstream == "fake" else upstream,
            where="test",
            fixtures_option="--fal-fixtures",
            credentials=Credentials.from_env({"FAL_KEY": key} if key else {}),
        )
        if kw:
            settings = type(settings)(**{**settings.__dict__, **kw})
        mock = FalMock(settings=Settings(record=settings), upstream=recorder_for(settings))
        if target.exists():
            mock.load_fixtures(target)
        mocks.append(mock.start())
        return mock

    yield build
    for mock in mocks:
        mock.stop()
