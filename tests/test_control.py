"""The control API under /__falmock/, over real HTTP."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from httpclient import http
from inner_runs import QUIET

from pytest_falmock import FalMock

DOC = {
    "fixtures": [
        {
            "match": {"model": "fal-ai/flux/dev"},
            "response": {"json": {"images": [{"url": "https://x/cat.png"}]}},
        },
        {"match": {"model": "fal-ai/whisper", "route": "run"}, "response": {"json": {"text": "hi"}}},
    ]
}


@pytest.fixture
def mock() -> Iterator[FalMock]:
    with FalMock() as server:
        yield server


def control(mock: FalMock, method: str, name: str, body: Any = None, **kw: Any) -> Any:
    return http(method, f"{mock.base_url}/__falmock/{name}", body, **kw)


def test_health(mock: FalMock) -> None:
    answer = control(mock, "GET", "health")
    assert (answer.status, answer.json) == (200, {"status": "ok"})
    assert answer.headers["Content-Type"] == "application/json"
    assert "Access-Control-Allow-Origin" not in answer.headers  # no web page reads the control API


def test_post_fixtures_adds_session_fixtures(mock: FalMock) -> None:
    answer = control(mock, "POST", "fixtures", DOC)
    assert (answer.status, answer.json) == (201, {"added": 2})
    run = http("POST", f"{mock.url}/run/fal-ai/whisper", {"audio_url": "https://x/a.mp3"})
    assert (run.status, run.json) == (200, {"text": "hi"})
    assert control(mock, "POST", "reset").status == 200
    envelope = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a"}).json
    assert http("GET", envelope["response_url"]).json == {"images": [{"url": "https://x/cat.png"}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "POST /__falmock/fixtures: the body is not valid JSON: "),
        (b"", 'fal fixture file POST /__falmock/fixtures: expected an object with a "fixtures" list'),
        (
            b'{"fixtures": [{"match": {}, "response": {"json": 1}}]}',
            "fixtures[0].match: needs exactly one of",
        ),
        (
            b'{"fixtures": [{"match": {"model": "m"}, "response": {}}]}',
            'fixtures[0].response: needs exactly one of "json" (a body) or "events" (a stream)',
        ),
    ],
)
def test_a_bad_fixture_body_is_400_with_a_clear_message(mock: FalMock, raw: bytes, message: str) -> None:
    answer = control(mock, "POST", "fixtures", raw=raw, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert message in answer.json["detail"]
    assert control(mock, "POST", "fixtures", DOC).json == {"added": 2}  # nothing half-added before


def test_reset_clears_jobs_journal_and_per_test_state_but_keeps_session_fixtures(mock: FalMock) -> None:
    control(mock, "POST", "fixtures", DOC)
    mock.on_run("fal-ai/per-test", {"ok": True})
    mock.queue(polls=3)
    envelope = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a"}).json
    assert mock.requests

    answer = control(mock, "POST", "reset")
    assert (answer.status, answer.json) == (200, {"reset": True})
    assert mock.requests == []
    assert http("GET", envelope["status_url"]).status == 404
    assert http("POST", f"{mock.url}/run/fal-ai/per-test", {}).status == 404
    fresh = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "b"}).json
    assert http("GET", fresh["status_url"]).json["status"] == "COMPLETED"  # polling realism reset too


def test_requests_lists_the_journal(mock: FalMock) -> None:
    control(mock, "POST", "fixtures", DOC)
    headers = {"Authorization": "Key very-secret-key"}
    envelope = http("POST", f"{mock.url}/queue/fal-ai/flux/dev?x=1", {"prompt": "a"}, headers=headers).json
    http("GET", envelope["status_url"])
    records = control(mock, "GET", "requests").json
    assert [(r["method"], r["route"], r["model"], r["status_code"]) for r in records] == [
        ("POST", "queue.submit", "fal-ai/flux/dev", 200),
        ("GET", "queue.status", "fal-ai/flux", 200),
    ]
    first = records[0]
    assert first["path"] == "/fal/queue/fal-ai/flux/dev"
    assert first["request_id"] == envelope["request_id"]
    assert first["input"] == {"prompt": "a"}
    assert first["query"] == {"x": "1"}
    assert first["headers"]["Authorization"] == "[REDACTED]"
    assert "very-secret-key" not in control(mock, "GET", "requests").body.decode()


def test_unknown_routes_and_wrong_methods(mock: FalMock) -> None:
    unknown = control(mock, "GET", "nope")
    assert unknown.status == 404
    assert "GET /__falmock/health" in unknown.json["detail"]
    wrong = control(mock, "GET", "reset")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "POST, OPTIONS"
    assert mock.requests == []  # control calls are not journaled


def test_unmatched_lists_requests_with_each_fixtures_reason(mock: FalMock) -> None:
    control(mock, "POST", "fixtures", DOC)
    http("POST", f"{mock.url}/queue/fal-ai/whisper", {"audio_url": "a.mp3"})

    (unmatched,) = control(mock, "GET", "unmatched").json

    assert unmatched == {
        "method": "POST",
        "path": "/fal/queue/fal-ai/whisper",
        "route": "queue.submit",
        "model": "fal-ai/whisper",
        "input": {"audio_url": "a.mp3"},
        "reasons": [
            {
                "fixture": "POST /__falmock/fixtures: fixtures[0] (model fal-ai/flux/dev)",
                "reason": "model 'fal-ai/flux/dev' != 'fal-ai/whisper'",
            },
            {
                "fixture": "POST /__falmock/fixtures: fixtures[1] (model fal-ai/whisper)",
                "reason": "route='run', request is a queue request",
            },
        ],
    }
    assert control(mock, "HEAD", "unmatched").status == 200


def test_delete_fixtures_forgets_session_fixtures_and_takes_no_body(mock: FalMock) -> None:
    control(mock, "POST", "fixtures", DOC)
    mock.on_run("fal-ai/whisper", {"text": "per test"})

    answer = control(mock, "DELETE", "fixtures")

    assert (answer.status, answer.json) == (200, {"removed": 2})
    assert http("POST", f"{mock.url}/run/fal-ai/whisper", {}).json == {"text": "per test"}  # kept
    assert http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {}).status == 404
    assert mock.clear_session_stubs() == 0


def test_the_control_api_is_on_under_pytest(pytester: pytest.Pytester) -> None:
    """In its own session: fixtures posted there live for the rest of that session."""
    pytester.makepyfile(
        """
        import json, urllib.request

        def call(method, url, body=None):
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"}
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req) as resp:
                return resp.status, json.loads(resp.read())

        DOC = {"fixtures": [{"match": {"model": "fal-ai/whisper"}, "response": {"json": {"text": "hi"}}}]}

        def test_control(fal_mock):
            assert call("GET", fal_mock.base_url + "/__falmock/health") == (200, {"status": "ok"})
            assert call("POST", fal_mock.base_url + "/__falmock/fixtures", DOC) == (201, {"added": 1})
            assert call("POST", fal_mock.url + "/run/fal-ai/whisper", {}) == (200, {"text": "hi"})
            status, records = call("GET", fal_mock.base_url + "/__falmock/requests")
            assert [r["route"] for r in records] == ["run"]
        """
    )
    pytester.runpytest(*QUIET).assert_outcomes(passed=1)
