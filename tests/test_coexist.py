"""fal_mock next to other HTTP mocks in the same test: pytest-httpx and respx."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import fal_client
import httpx
import pytest
import respx
from pytest_httpx import HTTPXMock

from pytest_falmock import FalMock
from pytest_falmock._versions import installed_version

MODEL = "fal-ai/fast-sdxl"


def test_pytest_httpx_leaves_the_fal_mock_alone(httpx_mock: HTTPXMock, fal_mock: FalMock) -> None:
    httpx_mock.add_response(url="https://api.example.com/weather", json={"sunny": True})
    fal_mock.on_run(MODEL, {"ok": True})

    assert fal_client.run(MODEL, {"prompt": "a cat"}) == {"ok": True}
    assert fal_client.subscribe(MODEL, {"prompt": "a dog"}) == {"ok": True}
    assert httpx.get("https://api.example.com/weather").json() == {"sunny": True}

    assert [r.route for r in fal_mock.requests] == ["run", "queue.submit", "queue.status", "queue.result"]
    assert [str(r.url) for r in httpx_mock.get_requests()] == ["https://api.example.com/weather"]


@pytest.mark.asyncio
async def test_pytest_httpx_leaves_the_fal_mock_alone_async(httpx_mock: HTTPXMock, fal_mock: FalMock) -> None:
    httpx_mock.add_response(url="https://api.example.com/weather", json={"sunny": True})
    fal_mock.on_run(MODEL, {"ok": True})

    assert await fal_client.AsyncClient().run(MODEL, {"prompt": "a cat"}) == {"ok": True}
    async with httpx.AsyncClient() as client:
        assert (await client.get("https://api.example.com/weather")).json() == {"sunny": True}


ASKED: list[str] = []


def only_the_weather(request: Any) -> bool:
    ASKED.append(request.url.host)
    return bool(request.url.host == "api.example.com")


@pytest.mark.httpx_mock(should_mock=only_the_weather)
def test_a_users_should_mock_still_decides_for_everything_else(
    httpx_mock: HTTPXMock, fal_mock: FalMock
) -> None:
    ASKED.clear()
    httpx_mock.add_response(url="https://api.example.com/x", json={"mocked": True})
    fal_mock.on_run(MODEL, {"ok": True})

    assert httpx.get("https://api.example.com/x").json() == {"mocked": True}
    assert fal_client.run(MODEL, {}) == {"ok": True}
    assert ASKED == ["api.example.com"]  # the fal mock's requests never reached the user's callable


def test_respx_with_the_one_documented_line(respx_mock: respx.MockRouter, fal_mock: FalMock) -> None:
    respx_mock.route(url__startswith=fal_mock.url).pass_through()
    weather = respx_mock.get("https://api.example.com/weather").respond(json={"sunny": True})
    fal_mock.on_run(MODEL, {"ok": True})

    assert fal_client.run(MODEL, {"prompt": "a cat"}) == {"ok": True}
    assert httpx.get("https://api.example.com/weather").json() == {"sunny": True}

    assert weather.call_count == 1
    assert [r.route for r in fal_mock.requests] == ["run"]


def test_installed_versions_are_read_by_their_leading_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"fal-client": "1.0.3rc1", "pytest-httpx": "0.33.dev0"}

    def version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)
    assert installed_version("fal-client") == (1, 0, 3)
    assert installed_version("pytest-httpx", 2) == (0, 33)
    assert installed_version("respx") is None
