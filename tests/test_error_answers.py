"""fal's error answers: ``start_timeout`` 504s, ``on_error(headers=)``, fixture-file
``response.headers`` and ``error_type`` in error bodies - through the real ``fal_client``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import fal_client
import pytest
from fal_client import FalClientHTTPError

from pytest_falmock import FalMock, FixtureFileError

SDXL = "fal-ai/fast-sdxl"
FLUX = "fal-ai/flux/dev"
#: fal_client refuses start_timeout <= 1: the shortest wait these tests can ask for.
START_TIMEOUT = 1.01
TIMED_OUT = {"detail": "Request timed out", "error_type": "request_timeout"}
Http = Callable[..., Any]


def routes(mock: FalMock) -> list[tuple[str, int]]:
    return [(r.route or "", r.status_code) for r in mock.requests if r.route != "queue.status"]


# -- start_timeout ------------------------------------------------------------------------
def test_run_slower_than_its_start_timeout_is_fals_504_and_not_retried(fal_mock: FalMock) -> None:
    fal_mock.on_run(SDXL, {"never": "sent"}, latency=60)

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.run(SDXL, {"prompt": "slow"}, start_timeout=START_TIMEOUT)

    error = excinfo.value
    assert (error.status_code, error.message, error.error_type) == (
        504,
        "Request timed out",
        "request_timeout",
    )
    assert error.response.json() == TIMED_OUT
    assert error.response.headers["X-Fal-Request-Timeout-Type"] == "user"
    assert error.response.headers["x-fal-error-type"] == "request_timeout"
    assert routes(fal_mock) == [("run", 504)]  # exactly one attempt
    assert fal_mock.requests[0].headers["X-Fal-Request-Timeout"] == "1.01"


def test_subscribe_slower_than_its_start_timeout_completes_with_the_504(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"never": "sent"}, latency=60)
    updates: list[Any] = []

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.subscribe(
            FLUX, {"prompt": "slow"}, start_timeout=START_TIMEOUT, on_queue_update=updates.append
        )

    error = excinfo.value
    assert (error.status_code, error.message, error.error_type) == (
        504,
        "Request timed out",
        "request_timeout",
    )
    assert error.response.headers["X-Fal-Request-Timeout-Type"] == "user"
    last = updates[-1]
    assert (type(last).__name__, last.error, last.error_type) == (
        "Completed",
        "Request timed out",
        "request_timeout",
    )
    assert routes(fal_mock) == [("queue.submit", 200), ("queue.result", 504)]  # one result fetch
    assert fal_mock.requests[0].headers["X-Fal-Request-Timeout"] == "1.01"


def test_a_start_timeout_longer_than_the_latency_changes_nothing(fal_mock: FalMock) -> None:
    fal_mock.on_run(SDXL, {"ok": True}, latency=0.01)
    fal_mock.on_queue(FLUX, {"ok": True}, latency=0.01)

    assert fal_client.run(SDXL, {}, start_timeout=30) == {"ok": True}
    assert fal_client.subscribe(FLUX, {}, start_timeout=30) == {"ok": True}


def test_the_start_timeout_ends_a_stream_too(fal_mock: FalMock, call: Http) -> None:
    fal_mock.on_stream("fal-ai/any-llm", [{"never": "sent"}], latency=60)

    answer = call(
        "POST",
        f"{fal_mock.url}/run/fal-ai/any-llm/stream",
        {},
        headers={"X-Fal-Request-Timeout": "0.01"},
    )

    assert (answer.status, answer.json) == (504, TIMED_OUT)
    assert answer.headers["X-Fal-Request-Timeout-Type"] == "user"


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_malformed_request_timeout_is_a_400(fal_mock: FalMock, call: Http, value: str) -> None:
    fal_mock.on_run(SDXL, {"ok": True})

    answer = call("POST", f"{fal_mock.url}/run/{SDXL}", {}, headers={"X-Fal-Request-Timeout": value})

    assert answer.status == 400
    assert answer.json == {
        "detail": f"X-Fal-Request-Timeout must be a positive number of seconds, got {value!r}"
    }
    assert [(r.route, r.model, r.status_code) for r in fal_mock.requests] == [("run", SDXL, 400)]


# -- on_error(headers=) and error_type ---------------------------------------------------------
def test_on_error_headers_reach_the_client_and_error_type_is_in_the_body(fal_mock: FalMock) -> None:
    fal_mock.on_error(
        SDXL, status=503, detail="Runner disconnected", error_type="runner_disconnected",
        headers={"Retry-After": "3", "X-Fal-Needs-Retry": "1"},
    )  # fmt: skip

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.run(SDXL, {})

    error = excinfo.value
    assert (error.status_code, error.error_type) == (503, "runner_disconnected")
    assert error.response.json() == {"detail": "Runner disconnected", "error_type": "runner_disconnected"}
    assert error.response.headers["Retry-After"] == "3"
    assert error.response.headers["X-Fal-Needs-Retry"] == "1"
    assert error.response.headers["x-fal-error-type"] == "runner_disconnected"
    assert routes(fal_mock) == [("run", 503)]


def test_on_error_headers_are_on_a_queue_jobs_result(fal_mock: FalMock) -> None:
    fal_mock.on_error(
        FLUX, status=504, detail="Request timed out", error_type="request_timeout",
        headers={"X-Fal-Request-Timeout-Type": "user"},
    )  # fmt: skip

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.subscribe(FLUX, {})

    assert excinfo.value.response.headers["X-Fal-Request-Timeout-Type"] == "user"
    assert routes(fal_mock) == [("queue.submit", 200), ("queue.result", 504)]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ("Retry-After: 1", "headers must be a dict of header names to string values, got 'Retry-After: 1'"),
        ({"Bad Name": "1"}, "headers must be keyed by valid header names"),
        ({"X-A": "1\r\nSet-Cookie: x=1"}, "headers must be string values of printable ASCII"),
        ({"X-A": 1}, "headers must be string values of printable ASCII"),
        ({"Content-Length": "0"}, "headers must be free of headers the mock sets itself"),
        ({"transfer-encoding": "chunked"}, "headers must be free of headers the mock sets itself"),
        ({"Content-Type": "text/html"}, "headers must be free of headers the mock sets itself"),
        ({"Access-Control-Allow-Origin": "*"}, "headers must be free of headers the mock sets itself"),
        ({"x-fal-request-id": "spoofed"}, "headers must be free of headers the mock sets itself"),
        ({"X-Fal-Error-Type": "x"}, "headers must be free of X-Fal-Error-Type (set it with error_type=)"),
        ({"X-A": "1", "x-a": "2"}, "headers must be free of duplicate names"),
        ({f"X-{i}": "v" for i in range(33)}, "headers must be at most 32 headers"),
    ],
)
def test_on_error_refuses_headers_that_break_framing_or_spoof_the_mock(
    fal_mock: FalMock, headers: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=r"^fal_mock\.on_error\(\): ") as excinfo:
        fal_mock.on_error(SDXL, status=500, headers=headers)

    assert message in str(excinfo.value)


def test_fixture_file_response_headers(call: Http) -> None:
    entry = {
        "match": {"model": SDXL},
        "response": {"json": {"detail": "Slow down"}, "status": 429, "headers": {"Retry-After": "0"}},
    }
    with FalMock() as mock:
        mock.add_fixture_document({"fixtures": [entry]})

        answer = call("POST", f"{mock.url}/run/{SDXL}", {})

    assert (answer.status, answer.json) == (429, {"detail": "Slow down"})  # the file's body, as is
    assert answer.headers["Retry-After"] == "0"


def test_a_fixture_file_error_body_carries_its_error_type(call: Http) -> None:
    entries = [
        {
            "match": {"model": SDXL},
            "response": {"json": {"detail": "Busy"}, "status": 503, "error_type": "runner_disconnected"},
        },
        {
            "match": {"model": FLUX},
            "response": {"json": {"detail": "x", "error_type": "own"}, "status": 500, "error_type": "other"},
        },
    ]
    with FalMock() as mock:
        mock.add_fixture_document({"fixtures": entries})

        run = call("POST", f"{mock.url}/run/{SDXL}", {})
        kept = call("POST", f"{mock.url}/run/{FLUX}", {})
        envelope = call("POST", f"{mock.url}/queue/{SDXL}", {}).json
        result = call("GET", envelope["response_url"])

    assert (run.status, run.json) == (503, {"detail": "Busy", "error_type": "runner_disconnected"})
    assert run.headers["x-fal-error-type"] == "runner_disconnected"
    assert kept.json == {"detail": "x", "error_type": "own"}  # a body's own error_type is kept
    assert (result.status, result.json) == (503, {"detail": "Busy", "error_type": "runner_disconnected"})


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"json": {}, "events": []}, 'response: needs exactly one of "json" (a body) or "events" (a stream)'),
        ({}, 'response: needs exactly one of "json" (a body) or "events" (a stream)'),
        ({"events": None}, "response.events: expected a list of JSON values, got None"),
        ({"events": [], "status": 500}, 'response.status: a stream ("events") always answers 200'),
        ({"events": [], "error_type": "x"}, 'response.error_type: a stream ("events") always answers 200'),
    ],
)
def test_fixture_file_stream_entries_are_validated(response: Any, message: str) -> None:
    document = {"fixtures": [{"match": {"model": SDXL}, "response": response}]}

    with pytest.raises(FixtureFileError) as excinfo:
        FalMock().add_fixture_document(document, "fal.json")

    assert str(excinfo.value) == f"fal fixture file fal.json: fixtures[0].{message}"


def test_a_fixture_file_stream_entry_refuses_a_route() -> None:
    entry = {"match": {"model": SDXL, "route": "run"}, "response": {"events": []}}

    with pytest.raises(FixtureFileError, match=r"fixtures\[0\]\.match\.route: a stream"):
        FalMock().add_fixture_document({"fixtures": [entry]}, "fal.json")


def test_a_fixture_file_stream_serves_fal_client_stream(call: Http) -> None:
    events = [{"token": "a"}, {"token": "b"}]
    entry = {"match": {"model": "fal-ai/any-llm"}, "response": {"events": events, "headers": {"X-A": "1"}}}
    with FalMock() as mock:
        mock.add_fixture_document({"fixtures": [entry]})

        answer = call(
            "POST", f"{mock.url}/run/fal-ai/any-llm/stream", {}, headers={"Accept": "text/event-stream"}
        )

    assert answer.status == 200
    assert answer.headers["X-A"] == "1"
    assert answer.body == b'data: {"token":"a"}\n\ndata: {"token":"b"}\n\n'


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (["x"], "fixtures[0].response.headers: expected a dict of header names to string values, got ['x']"),
        (
            {"Connection": "close"},
            "fixtures[0].response.headers: expected free of headers the mock sets itself",
        ),
    ],
)
def test_fixture_file_headers_are_validated(tmp_path: Path, headers: Any, message: str) -> None:
    path = tmp_path / "fal.json"
    entry = {"match": {"model": SDXL}, "response": {"json": {}, "headers": headers}}
    path.write_text(json.dumps({"fixtures": [entry]}))

    with pytest.raises(FixtureFileError) as excinfo:
        FalMock().load_fixtures(path)

    assert message in str(excinfo.value)
