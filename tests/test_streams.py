"""Streams on any path: a run that asks for ``text/event-stream`` (or posts to ``.../stream``) is a
stream, served by ``on_stream`` fixtures for the endpoint id without ``/stream``."""

from __future__ import annotations

import json
from typing import Any, Callable

import fal_client
import httpx
import pytest

from pytest_falmock import FalMock

LLM = "fal-ai/any-llm"
EVENTS = [{"partial": "Hel"}, {"partial": "Hello"}, {"output": "Hello!"}]
Http = Callable[..., Any]


def wire(mock: FalMock) -> list[tuple[str, str, str, str, int]]:
    return [(r.method, r.path, r.route or "", r.model or "", r.status_code) for r in mock.requests]


@pytest.mark.parametrize(
    ("path", "model", "url"),
    [
        ("", LLM, "/fal/run/fal-ai/any-llm"),
        ("/v1/chat", LLM + "/v1/chat", "/fal/run/fal-ai/any-llm/v1/chat"),
        ("/stream", LLM, "/fal/run/fal-ai/any-llm/stream"),  # the default
    ],
)
def test_fal_client_stream_on_any_path(fal_mock: FalMock, path: str, model: str, url: str) -> None:
    fal_mock.on_stream(model, EVENTS)

    assert list(fal_client.stream(LLM, {"prompt": "hi"}, path=path)) == EVENTS

    assert wire(fal_mock) == [("POST", url, "run.stream", model, 200)]
    (record,) = fal_mock.requests
    assert record.headers["accept"] == "text/event-stream"
    assert record.input == {"prompt": "hi"}
    fal_mock.assert_called(model, times=1)


@pytest.mark.asyncio
async def test_fal_client_stream_async_with_an_empty_path(fal_mock: FalMock) -> None:
    fal_mock.on_stream(LLM, EVENTS)

    events = [event async for event in fal_client.stream_async(LLM, {"prompt": "hi"}, path="")]

    assert events == EVENTS
    assert wire(fal_mock) == [("POST", "/fal/run/fal-ai/any-llm", "run.stream", LLM, 200)]


def test_a_stream_fixture_does_not_serve_another_path(fal_mock: FalMock) -> None:
    fal_mock.configure(allow_unmatched=True)
    fal_mock.on_stream(LLM, EVENTS)

    with pytest.raises(httpx.HTTPError):  # an SSEError: the 404 is JSON, not an event stream
        list(fal_client.stream(LLM, {"prompt": "hi"}, path="/v1/chat"))

    (unmatched,) = fal_mock.unmatched
    assert (unmatched.route, unmatched.model) == ("run.stream", LLM + "/v1/chat")
    assert [reason for _, reason in unmatched.reasons] == [
        f"model {LLM!r} != {LLM + '/v1/chat'!r}",
    ]


def test_a_get_that_asks_for_an_event_stream_is_a_stream(fal_mock: FalMock, call: Http) -> None:
    fal_mock.on_stream(LLM, EVENTS)

    answer = call("GET", f"{fal_mock.url}/run/{LLM}?prompt=hi", headers={"Accept": "text/event-stream"})

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert answer.body == b"".join(
        b"data: " + json.dumps(e).replace(" ", "").encode() + b"\n\n" for e in EVENTS
    )
    assert wire(fal_mock) == [("GET", "/fal/run/fal-ai/any-llm", "run.stream", LLM, 200)]
    assert fal_mock.requests[0].input == {"prompt": "hi"}


def test_a_get_to_the_stream_suffix_without_accept_is_still_405(fal_mock: FalMock, call: Http) -> None:
    answer = call("GET", f"{fal_mock.url}/run/{LLM}/stream")

    assert (answer.status, answer.headers["Allow"]) == (405, "POST, OPTIONS")


@pytest.mark.parametrize(
    ("accept", "route"),
    [
        ("text/event-stream", "run.stream"),
        ("application/json, text/event-stream", "run.stream"),  # @fal-ai/client's fal.stream
        ("TEXT/EVENT-STREAM; q=0.5", "run.stream"),
        ("text/event-stream; q=high", "run.stream"),  # an unreadable q is no refusal
        ("text/event-stream;q=0, application/json", "run"),  # q=0 refuses
        ("application/json", "run"),
        ("*/*", "run"),
    ],
)
def test_accept_decides_between_run_and_stream(
    fal_mock: FalMock, call: Http, accept: str, route: str
) -> None:
    fal_mock.on_run(LLM, {"output": "whole"})
    fal_mock.on_stream(LLM, EVENTS)

    answer = call("POST", f"{fal_mock.url}/run/{LLM}", {"prompt": "hi"}, headers={"Accept": accept})

    assert answer.status == 200
    assert fal_mock.requests[0].route == route
    if route == "run":
        assert answer.json == {"output": "whole"}
    else:
        assert answer.headers["Content-Type"].startswith("text/event-stream")


def test_a_run_that_takes_any_type_falls_back_to_a_stream_fixture(fal_mock: FalMock) -> None:
    """``fal.apps.stream`` posts to the app root with httpx's ``Accept: */*``: served by the stream."""
    fal_mock.on_stream(LLM, EVENTS)

    with httpx.Client() as client:
        response = client.post(f"{fal_mock.url}/run/{LLM}", json={"prompt": "hi"})

    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.splitlines() if line]
    assert [json.loads(line.removeprefix("data: ")) for line in lines] == EVENTS
    assert wire(fal_mock) == [("POST", "/fal/run/fal-ai/any-llm", "run", LLM, 200)]


def test_a_run_fixture_wins_over_the_stream_fallback(fal_mock: FalMock) -> None:
    fal_mock.on_run(LLM, {"output": "whole"})
    fal_mock.on_stream(LLM, EVENTS)  # newer, but a run is served by a run fixture first

    assert fal_client.run(LLM, {"prompt": "hi"}) == {"output": "whole"}


def test_a_run_that_refuses_streams_is_not_served_by_one(fal_mock: FalMock, call: Http) -> None:
    fal_mock.configure(allow_unmatched=True)
    fal_mock.on_stream(LLM, EVENTS)

    answer = call("POST", f"{fal_mock.url}/run/{LLM}", {}, headers={"Accept": "application/json"})

    assert answer.status == 404
    (unmatched,) = fal_mock.unmatched
    assert unmatched.reasons[0][1] == (
        "stream fixture, request is a run request "
        "(a stream asks for Accept: text/event-stream or posts to .../stream)"
    )


def test_the_stream_fallback_explains_a_stream_fixture_that_does_not_match(
    fal_mock: FalMock, call: Http
) -> None:
    fal_mock.configure(allow_unmatched=True)
    fal_mock.on_stream(LLM, EVENTS, match_input={"prompt": "hello"})

    answer = call("POST", f"{fal_mock.url}/run/{LLM}", {"prompt": "hi"})

    assert answer.status == 404
    (unmatched,) = fal_mock.unmatched
    assert unmatched.reasons[0][1] == 'input {"prompt": "hi"} does not contain {"prompt": "hello"}'


def test_fal_apps_stream(fal_mock: FalMock) -> None:
    apps = pytest.importorskip("fal.apps", reason="the fal package is not installed")
    fal_mock.on_stream(LLM, EVENTS)

    lines = list(apps.stream(LLM, {"prompt": "hi"}))

    assert [json.loads(line.removeprefix("data: ")) for line in lines] == EVENTS
    assert [(r.route, r.model) for r in fal_mock.requests] == [("run", LLM)]
