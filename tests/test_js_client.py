"""The real ``@fal-ai/client`` (Node, pinned in tests/js/package-lock.json) against ``fal_mock``.

Each test registers fixtures, runs ``node tests/js/run_scenario.mjs <scenario> <fal_mock.url>``
and checks both what the client returned (one JSON line on stdout) and what it sent
(``fal_mock.requests``). The script refuses any URL that is not on 127.0.0.1, and every test
checks that each request the script made reached the mock.

Set up with ``npm ci --prefix tests/js``. Without Node or the install these tests skip,
except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest

from pytest_falmock import FalMock

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "run_scenario.mjs"
CLIENT_VERSION = "1.10.1"
INSTALL = "npm ci --prefix tests/js"
TIMEOUT = 30
MIDDLEWARES = ["proxy", "manual"]  # withProxy({when: "always"}) (>= 1.10); hand-written (< 1.10)

FLUX = "fal-ai/flux/dev"
SDXL = "fal-ai/fast-sdxl"
LLM = "fal-ai/any-llm"
WHISPER = "fal-ai/whisper"
CAT = {"images": [{"url": "https://cdn.example/cat.png"}]}
CAT_RENDERED = {
    "images": [
        {"url": "https://cdn.example/cat.png", "width": 1024, "height": 1024, "content_type": "image/png"}
    ],
    "has_nsfw_concepts": [False],
    "timings": {"inference": 0},
    "seed": 0,
}
REDACTED = "[REDACTED]"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable() -> Optional[str]:
    """Why the JS tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    installed = JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json"
    if not installed.is_file():
        return f"tests/js/node_modules is missing (run `{INSTALL}`)"
    version = json.loads(installed.read_text())["version"]
    if version != CLIENT_VERSION:
        return f"tests/js has @fal-ai/client {version}, expected {CLIENT_VERSION} (run `{INSTALL}`)"
    return None


@pytest.fixture(scope="module")
def node_bin() -> str:
    reason = _unavailable()
    if reason is not None:
        if _ci():
            pytest.fail(f"@fal-ai/client tests must run in CI: {reason}", pytrace=False)
        pytest.skip(f"@fal-ai/client tests skipped: {reason}")
    node = shutil.which("node")
    assert node is not None
    return node


def run_js(node: str, mock: FalMock, scenario: str, middleware: str = "proxy") -> Any:
    """Run one scenario; return its result after checking every request reached the mock."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    proc = subprocess.run(
        [node, str(SCRIPT), scenario, mock.url, middleware],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"node printed nothing (exit {proc.returncode}); stderr:\n{proc.stderr}"
    out = json.loads(lines[-1])
    failure = (
        f"scenario {scenario} failed (exit {proc.returncode}): {out.get('error')}\n"
        f"{out.get('stack')}\nstderr:\n{proc.stderr}"
    )
    assert proc.returncode == 0, failure
    assert out["ok"], failure
    # No request left 127.0.0.1 (the script refuses them), each went to this mock and the
    # mock journaled each one.
    fetches = out["fetches"]
    mock_host = urlsplit(mock.base_url).netloc
    assert [urlsplit(f["url"]).netloc for f in fetches] == [mock_host] * len(fetches)
    journal = [r for r in mock.requests if r.route not in ("realtime.connect", "realtime.message")]
    assert sorted(f["method"] for f in fetches) == sorted(r.method for r in journal)
    # Each WebSocket the script opened (through the harness's shim) reached this mock.
    connections = [r for r in mock.requests if r.route == "realtime.connect"]
    assert len(out["sockets"]) == len(connections)
    return _fold_messages(out["result"])


def _fold_messages(value: Any) -> Any:
    """Casefold ApiError messages: they are the HTTP reason phrase, whose case is up to the server."""
    if isinstance(value, dict):
        folded = {k: _fold_messages(v) for k, v in value.items()}
        if folded.get("isApiError") is True and isinstance(folded.get("message"), str):
            folded["message"] = folded["message"].casefold()
        return folded
    if isinstance(value, list):
        return [_fold_messages(v) for v in value]
    return value


def target(record: Any) -> Optional[str]:
    value: Optional[str] = record.headers.get("x-fal-target-url")
    return value


def wire(mock: FalMock) -> list[tuple[str, Optional[str], Optional[str], int]]:
    """The journal as (method, route, x-fal-target-url, status code)."""
    return [(r.method, r.route, target(r), r.status_code) for r in mock.requests]


def queue_url(request_id: str, tail: str = "") -> str:
    return f"https://queue.fal.run/fal-ai/flux/requests/{request_id}{tail}"


def mock_job_url(mock: FalMock, request_id: str) -> str:
    return f"{mock.url}/queue/fal-ai/flux/requests/{request_id}"


def assert_client_headers(record: Any) -> None:
    """The headers @fal-ai/client puts on every proxied request."""
    assert record.path == "/fal"
    assert record.headers["authorization"] == REDACTED  # "Key x", redacted in the journal
    assert record.headers["user-agent"] == f"@fal-ai/client/{CLIENT_VERSION}"
    assert record.headers["content-type"] == "application/json"


# -- subscribe -------------------------------------------------------------------------------


@pytest.mark.parametrize("middleware", MIDDLEWARES)
@pytest.mark.fal_queue(polls_before_in_progress=2, polls_before_completed=3)
def test_subscribe_polls_with_logs_and_queue_updates(
    node_bin: str, fal_mock: FalMock, middleware: str
) -> None:
    fal_mock.on_image(FLUX, CAT)

    result = run_js(node_bin, fal_mock, "subscribe", middleware)

    rid = result["requestId"]
    assert UUID.match(rid)
    assert result["enqueued"] == rid
    assert result["data"] == {**CAT_RENDERED, "prompt": "a cat"}
    assert result["updates"] == [
        {"status": "IN_QUEUE", "queue_position": 1, "logs": ["Job enqueued."]},
        {"status": "IN_PROGRESS", "queue_position": 0, "logs": ["Job enqueued.", "Job started processing."]},
        {"status": "COMPLETED", "logs": ["Job enqueued.", "Job started processing.", "Job completed."]},
    ]
    status = queue_url(rid, "/status?logs=1")
    assert wire(fal_mock) == [
        ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200),
        ("GET", "queue.status", status, 202),
        ("GET", "queue.status", status, 202),
        ("GET", "queue.status", status, 200),
        ("GET", "queue.result", queue_url(rid), 200),
    ]
    submit = fal_mock.requests[0]
    assert (submit.model, submit.request_id, submit.input) == (FLUX, rid, {"prompt": "a cat"})
    assert submit.headers["x-fal-queue-priority"] == "normal"
    assert submit.query == {}
    for record in fal_mock.requests:
        assert_client_headers(record)
    assert [r.request_id for r in fal_mock.requests] == [rid] * 5
    fal_mock.assert_called(FLUX, times=1)


@pytest.mark.parametrize("middleware", MIDDLEWARES)
@pytest.mark.fal_queue(polls_before_in_progress=2, polls_before_completed=3)
def test_subscribe_streaming_mode_reads_the_status_stream(
    node_bin: str, fal_mock: FalMock, middleware: str
) -> None:
    fal_mock.on_image(FLUX, CAT)

    result = run_js(node_bin, fal_mock, "subscribe_streaming", middleware)

    rid = result["requestId"]
    assert result["enqueued"] == rid
    assert result["data"] == {**CAT_RENDERED, "prompt": "a dog"}
    # One SSE event per state; the stream closed after COMPLETED (or the client would hang).
    # Each event carries only new log lines; the client accumulates them.
    assert result["updates"] == [
        {"status": "IN_QUEUE", "queue_position": 1, "logs": ["Job enqueued."]},
        {"status": "IN_PROGRESS", "queue_position": 0, "logs": ["Job enqueued.", "Job started processing."]},
        {"status": "COMPLETED", "logs": ["Job enqueued.", "Job started processing.", "Job completed."]},
    ]
    assert wire(fal_mock) == [
        ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200),
        ("GET", "queue.status_stream", queue_url(rid, "/status/stream?logs=1"), 200),
        ("GET", "queue.result", queue_url(rid), 200),
    ]
    stream = fal_mock.requests[1]
    assert stream.headers["accept"] == "application/json, text/event-stream"
    assert stream.query == {"logs": "1"}


def test_subscribe_timeout_rejects_and_cancels(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"never": "seen"}, latency=5)

    result = run_js(node_bin, fal_mock, "subscribe_timeout")

    rid = result["enqueued"]
    assert result["error"] == {
        "name": "Error",
        "message": "Client timed out waiting for the request to complete after 300ms",
        "isApiError": False,
        "isValidationError": False,
    }
    routes = wire(fal_mock)
    assert routes[0] == ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200)
    cancels = [r for r in routes if r[1] == "queue.cancel"]
    assert cancels == [("PUT", "queue.cancel", queue_url(rid, "/cancel"), 200)]
    before_cancel = routes[1 : routes.index(cancels[0])]
    assert before_cancel
    assert set(before_cancel) == {("GET", "queue.status", queue_url(rid, "/status?logs=0"), 202)}
    assert {r[1] for r in routes} == {"queue.submit", "queue.status", "queue.cancel"}


# -- queue, step by step ---------------------------------------------------------------------


@pytest.mark.fal_queue(polls_before_completed=2)
def test_queue_submit_status_result(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_image(FLUX, CAT)

    result = run_js(node_bin, fal_mock, "queue")

    submitted = result["submitted"]
    rid = submitted["request_id"]
    assert UUID.match(rid)
    job = mock_job_url(fal_mock, rid)
    assert submitted == {
        "request_id": rid,
        "status_url": job + "/status",
        "response_url": job,
        "cancel_url": job + "/cancel",
        "queue_position": 0,
        "status": "IN_QUEUE",
    }
    first = result["first"]
    assert [(log["level"], log["source"], log["message"]) for log in first["logs"]] == [
        ("INFO", "user", "Job enqueued."),
        ("INFO", "user", "Job started processing."),
    ]
    assert first == {
        "status": "IN_PROGRESS",
        "request_id": rid,
        "response_url": job,
        "logs": first["logs"],
        "queue_position": 0,
    }
    # A result fetched before completion is not an error for @fal-ai/client: it resolves
    # with the 202 status body as data.
    assert result["early"] == {"data": first, "requestId": rid}
    second = result["second"]
    assert second["status"] == "COMPLETED"
    assert second["request_id"] == rid
    assert second["response_url"] == job
    assert second["logs"][:2] == first["logs"]
    assert [log["message"] for log in second["logs"]] == [
        "Job enqueued.",
        "Job started processing.",
        "Job completed.",
    ]
    assert set(second) == {"status", "request_id", "response_url", "logs", "metrics"}
    assert set(second["metrics"]) == {"inference_time"}
    assert second["metrics"]["inference_time"] >= 0
    assert result["result"] == {"data": {**CAT_RENDERED, "prompt": "a fox"}, "requestId": rid}

    assert wire(fal_mock) == [
        ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200),
        ("GET", "queue.status", queue_url(rid, "/status?logs=1"), 202),
        ("GET", "queue.result", queue_url(rid), 202),
        ("GET", "queue.status", queue_url(rid, "/status?logs=0"), 200),
        ("GET", "queue.result", queue_url(rid), 200),
    ]
    submit = fal_mock.requests[0]
    assert submit.input == {"prompt": "a fox"}
    assert submit.headers["x-fal-queue-priority"] == "low"
    assert submit.headers["x-fal-runner-hint"] == "gpu-a"
    assert submit.headers["x-custom-thing"] == "1"
    assert [r.query for r in fal_mock.requests] == [{}, {"logs": "1"}, {}, {"logs": "0"}, {}]


@pytest.mark.fal_queue(polls=5)
def test_queue_cancel_then_status_result_and_cancel_again(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_image(FLUX, CAT)

    result = run_js(node_bin, fal_mock, "cancel")

    rid = result["requestId"]
    assert result["cancelled"] is None  # fal.queue.cancel resolves to undefined
    assert result["status"] == {"status": "COMPLETED", "logs": ["Job enqueued.", "Job cancelled."]}
    raw = result["rawStatus"]
    assert {k: v for k, v in raw.items() if k != "logs"} == {
        "status": "COMPLETED",
        "request_id": rid,
        "response_url": mock_job_url(fal_mock, rid),
        "metrics": {"inference_time": 0},
        "error": "Request was cancelled",
        "error_type": "request_cancelled",
    }
    cancelled = {"detail": "Request was cancelled", "error_type": "request_cancelled"}
    assert result["result"] == {"error": api_error(400, cancelled, rid)}
    assert result["again"] == {"error": api_error(400, {"status": "ALREADY_COMPLETED"}, "")}
    assert wire(fal_mock) == [
        ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200),
        ("PUT", "queue.cancel", queue_url(rid, "/cancel"), 200),
        ("GET", "queue.status", queue_url(rid, "/status?logs=1"), 200),
        ("GET", "queue.result", queue_url(rid), 400),
        ("PUT", "queue.cancel", queue_url(rid, "/cancel"), 400),
    ]
    assert fal_mock.requests[1].body == b""  # cancel is a PUT without a body


# -- run and stream --------------------------------------------------------------------------


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_run_returns_data_and_request_id(node_bin: str, fal_mock: FalMock, middleware: str) -> None:
    fal_mock.on_run(SDXL, {"images": [{"url": "https://cdn.example/tree.png"}], "seed": 7})
    fal_mock.on_run(SDXL + "/info", {"name": "fast-sdxl"}, route="run")

    result = run_js(node_bin, fal_mock, "run", middleware)

    post, get = fal_mock.requests
    assert result == {
        "post": {
            "data": {"images": [{"url": "https://cdn.example/tree.png"}], "seed": 7},
            "requestId": post.request_id,
        },
        "get": {"data": {"name": "fast-sdxl"}, "requestId": get.request_id},
    }
    assert UUID.match(post.request_id or "")
    assert UUID.match(get.request_id or "")
    assert post.request_id != get.request_id
    assert wire(fal_mock) == [
        ("POST", "run", "https://fal.run/fal-ai/fast-sdxl", 200),
        ("GET", "run", "https://fal.run/fal-ai/fast-sdxl/info?a=1", 200),
    ]
    assert (post.model, post.input) == (SDXL, {"prompt": "a tree"})
    assert (get.model, get.input, get.query) == (SDXL + "/info", {"a": "1"}, {"a": "1"})
    for record in (post, get):
        assert_client_headers(record)
        assert "x-fal-queue-priority" not in record.headers
    fal_mock.assert_called(SDXL, times=1)


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_stream_yields_events_and_done_resolves_to_the_last(
    node_bin: str, fal_mock: FalMock, middleware: str
) -> None:
    events = [{"partial": "Hel"}, {"partial": "Hello"}, {"output": "Hello!", "done": True}]
    fal_mock.on_stream(LLM, events=events)

    result = run_js(node_bin, fal_mock, "stream", middleware)

    (record,) = fal_mock.requests
    assert result == {"events": events, "done": events[-1], "requestId": record.request_id}
    assert UUID.match(record.request_id or "")
    assert wire(fal_mock) == [("POST", "run.stream", "https://fal.run/fal-ai/any-llm/stream", 200)]
    assert (record.model, record.input) == (LLM, {"prompt": "hi"})
    assert record.headers["accept"] == "application/json, text/event-stream"
    fal_mock.assert_called(LLM, times=1)


# -- storage ---------------------------------------------------------------------------------

PNG_BYTES = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0xFF, 0x10, 0x80])
FILE_URL = r"/fal/files/[0-9a-f]{32}/"


def test_storage_upload_over_90_mib_goes_multipart(node_bin: str, fal_mock: FalMock) -> None:
    result = run_js(node_bin, fal_mock, "upload_multipart")

    url = result["url"]
    assert re.fullmatch(re.escape(fal_mock.base_url) + FILE_URL + r"take\.mov", url)
    assert (result["status"], result["contentType"]) == (200, "video/quicktime")
    assert (result["receivedSize"], result["received"]) == (result["size"], result["sent"])
    (upload,) = fal_mock.uploads
    assert (upload.url, upload.file_name, upload.size, upload.via) == (
        url,
        "take.mov",
        result["size"],
        "multipart",
    )
    wire = [(r.method, r.route, target(r), r.status_code) for r in fal_mock.requests]
    initiate = "https://rest.fal.ai/storage/upload/initiate-multipart?storage_type=fal-cdn-v3"
    assert wire == [
        ("POST", "storage.initiate_multipart", initiate, 200),
        *[("PUT", "files.upload_part", None, 200)] * 10,  # straight to upload_url, in order
        ("POST", "files.complete_multipart", None, 200),
        ("GET", "files.get", None, 200),
    ]
    parts = [r.path.rsplit("/", 1)[1] for r in fal_mock.requests[1:11]]
    assert parts == [str(n) for n in range(1, 11)]


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_storage_upload_puts_directly_to_the_mock(node_bin: str, fal_mock: FalMock, middleware: str) -> None:
    result = run_js(node_bin, fal_mock, "upload", middleware)

    url = result["url"]
    assert re.fullmatch(re.escape(fal_mock.base_url) + FILE_URL + r"pixel\.png", url)
    assert result == {
        "url": url,
        "status": 200,
        "contentType": "image/png",
        "sent": PNG_BYTES.hex(),
        "received": PNG_BYTES.hex(),
    }
    (upload,) = fal_mock.uploads
    assert (upload.url, upload.file_name, upload.content_type, upload.data, upload.via) == (
        url,
        "pixel.png",
        "image/png",
        PNG_BYTES,
        "storage",
    )
    path = urlsplit(url).path
    assert [(r.method, r.path, r.route, target(r), r.status_code) for r in fal_mock.requests] == [
        (
            "POST",
            "/fal",
            "storage.initiate",
            "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
            200,
        ),
        ("PUT", path, "files.put", None, 200),  # straight to upload_url, not through the proxy
        ("GET", path, "files.get", None, 200),
    ]
    initiate, put, _ = fal_mock.requests
    assert initiate.input == {"content_type": "image/png", "file_name": "pixel.png"}
    assert initiate.query == {"storage_type": "fal-cdn-v3"}
    assert_client_headers(initiate)
    assert "authorization" not in put.headers
    assert put.headers["content-type"] == "image/png"
    assert put.body == PNG_BYTES


def test_blob_in_input_is_uploaded_and_replaced_by_its_url(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_run(WHISPER, {"text": "hello"})

    result = run_js(node_bin, fal_mock, "upload_in_input")

    (upload,) = fal_mock.uploads
    assert re.fullmatch(re.escape(fal_mock.base_url) + FILE_URL + r"\d+\.wav", upload.url)
    assert (upload.content_type, upload.data, upload.via) == ("audio/wav", b"RIFF-audio", "storage")
    initiate, put, run = fal_mock.requests
    assert result == {"data": {"text": "hello"}, "requestId": run.request_id}
    assert [r.route for r in (initiate, put, run)] == ["storage.initiate", "files.put", "run"]
    assert initiate.input == {"content_type": "audio/wav", "file_name": upload.file_name}
    assert run.input == {"audio_url": upload.url, "task": "transcribe"}
    assert target(run) == "https://fal.run/fal-ai/whisper"


# -- errors ----------------------------------------------------------------------------------


def api_error(status: int, body: Any, request_id: Optional[str]) -> dict[str, Any]:
    """An ApiError as run_scenario.mjs describes it (``message``: the reason phrase, casefolded)."""
    return {
        "name": "ApiError",
        "message": HTTPStatus(status).phrase.casefold(),
        "isApiError": True,
        "isValidationError": False,
        "status": status,
        "body": body,
        "requestId": request_id,
    }


def test_422_is_a_validation_error_with_field_errors(node_bin: str, fal_mock: FalMock) -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "must not be empty", "type": "value_error"}]
    fal_mock.on_error(FLUX, status=422, detail=detail)
    fal_mock.on_error(SDXL, status=422, detail="prompt is required")

    result = run_js(node_bin, fal_mock, "error_validation")

    submit, _status, failed_result, run, run_string = fal_mock.requests
    rid = submit.request_id

    def validation(body: Any, field_errors: Any, request_id: Optional[str]) -> dict[str, Any]:
        return {
            **api_error(422, body, request_id),
            "name": "ValidationError",
            "isValidationError": True,
            "fieldErrors": field_errors,
        }

    assert result == {
        "viaSubscribe": {"error": validation({"detail": detail}, detail, rid)},
        "viaRun": {"error": validation({"detail": detail}, detail, run.request_id)},
        "withStringDetail": {
            "error": validation(
                {"detail": "prompt is required"},
                [{"loc": ["body"], "msg": "prompt is required", "type": "value_error"}],
                run_string.request_id,
            )
        },
    }
    assert wire(fal_mock) == [
        ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200),
        ("GET", "queue.status", queue_url(rid or "", "/status?logs=0"), 200),
        ("GET", "queue.result", queue_url(rid or "", ""), 422),
        ("POST", "run", "https://fal.run/fal-ai/flux/dev", 422),
        ("POST", "run", "https://fal.run/fal-ai/fast-sdxl", 422),
    ]
    assert failed_result.request_id == rid


def test_other_statuses_are_api_errors_with_status_and_body(node_bin: str, fal_mock: FalMock) -> None:
    # Codes @fal-ai/client does not retry here: 429/502/503/504 would cost seconds of backoff.
    fal_mock.on_error(FLUX, status=400, detail="bad prompt", error_type="bad_input")
    fal_mock.on_error(SDXL, status=401, detail="nope")
    fal_mock.on_error(LLM, status=500, detail="stream broke", error_type="internal_error")

    result = run_js(node_bin, fal_mock, "error_api")

    submit, status, _, run, stream = fal_mock.requests
    broke = {"detail": "stream broke", "error_type": "internal_error"}
    assert result == {
        "viaSubscribe": {
            "error": api_error(400, {"detail": "bad prompt", "error_type": "bad_input"}, submit.request_id)
        },
        "viaRun": {"error": api_error(401, {"detail": "nope"}, run.request_id)},
        "viaStream": {"error": api_error(500, broke, stream.request_id)},
    }
    rid = submit.request_id or ""
    assert wire(fal_mock) == [
        ("POST", "queue.submit", "https://queue.fal.run/fal-ai/flux/dev", 200),
        ("GET", "queue.status", queue_url(rid, "/status?logs=0"), 200),
        ("GET", "queue.result", queue_url(rid), 400),
        ("POST", "run", "https://fal.run/fal-ai/fast-sdxl", 401),
        ("POST", "run.stream", "https://fal.run/fal-ai/any-llm/stream", 500),
    ]
    assert status.request_id == rid


def test_fail_times_then_succeed(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_run(SDXL, {"ok": True})
    fal_mock.on_error(SDXL, status=400, detail="try again", times=1)

    result = run_js(node_bin, fal_mock, "fail_then_succeed")

    first, second = fal_mock.requests
    assert result == {
        "first": {"error": api_error(400, {"detail": "try again"}, first.request_id)},
        "second": {"resolved": {"data": {"ok": True}, "requestId": second.request_id}},
    }
    assert [(r.route, r.status_code) for r in fal_mock.requests] == [("run", 400), ("run", 200)]


@pytest.mark.fal_mock(allow_unmatched=True)
def test_unmatched_model_is_a_404_api_error(node_bin: str, fal_mock: FalMock) -> None:
    result = run_js(node_bin, fal_mock, "unmatched")

    body = {
        "detail": "fal_mock: no fixture matches model 'fal-ai/unknown-model' (run request)",
        "error_type": "no_fixture_match",
        "model": "fal-ai/unknown-model",
    }
    assert result == {"error": api_error(404, body, "")}
    assert wire(fal_mock) == [("POST", "run", "https://fal.run/fal-ai/unknown-model", 404)]
    (unmatched,) = fal_mock.unmatched
    assert (unmatched.route, unmatched.model, unmatched.input) == (
        "run",
        "fal-ai/unknown-model",
        {"prompt": "?"},
    )


def test_start_timeout_is_a_504_that_is_never_retried(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_run(SDXL, {"never": "sent"}, latency=30)
    fal_mock.on_queue(FLUX, {"never": "sent"}, latency=30)
    fal_mock.on_error(
        WHISPER, status=504, detail="Request timed out", headers={"X-Fal-Request-Timeout-Type": "user"}
    )

    result = run_js(node_bin, fal_mock, "start_timeout")

    timed_out = {"detail": "Request timed out", "error_type": "request_timeout"}
    run = next(r for r in fal_mock.requests if r.route == "run" and r.model == SDXL)
    submit = next(r for r in fal_mock.requests if r.route == "queue.submit")
    injected = next(r for r in fal_mock.requests if r.model == WHISPER)
    assert result == {
        "run": {"error": {**api_error(504, timed_out, run.request_id), "timeoutType": "user"}},
        "subscribe": {"error": {**api_error(504, timed_out, submit.request_id), "timeoutType": "user"}},
        "injected": {
            "error": {
                **api_error(504, {"detail": "Request timed out"}, injected.request_id),
                "timeoutType": "user",
            }
        },
    }
    # exactly one attempt each: the JS client retries a plain 504 three times
    routes = [(r.route, r.model) for r in fal_mock.requests if r.route != "queue.status"]
    assert sorted(routes, key=str) == sorted(
        [("run", SDXL), ("queue.submit", FLUX), ("queue.result", "fal-ai/flux"), ("run", WHISPER)], key=str
    )
    assert run.headers["x-fal-request-timeout"] == "1.01"
    assert submit.headers["x-fal-request-timeout"] == "1.01"


# -- realtime --------------------------------------------------------------------------------
LCM = "fal-ai/fast-lcm-diffusion"


def test_realtime_connect_sends_messages_and_gets_each_result(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, [{"images": [{"url": f"https://x/{i}.jpeg"}], "step": i} for i in range(3)])

    result = run_js(node_bin, fal_mock, "realtime")

    assert result["results"] == [{"images": [{"url": f"https://x/{i}.jpeg"}], "step": i} for i in range(3)]
    assert result["errors"] == []
    token, connection, *messages = fal_mock.requests
    assert (token.method, token.route, target(token), token.status_code) == (
        "POST",
        "realtime.token",
        "https://rest.fal.ai/tokens/",
        200,
    )
    assert token.input == {"allowed_apps": ["fast-lcm-diffusion"], "token_expiration": 120}
    assert (connection.route, connection.path, connection.status_code) == (
        "realtime.connect",
        f"/fal/run/{LCM}/realtime",
        101,
    )
    assert connection.query == {"fal_jwt_token": REDACTED}
    assert [(m.route, m.input, m.request_id) for m in messages] == [
        ("realtime.message", {"prompt": prompt, "seed": 1}, connection.request_id)
        for prompt in ("a cat", "a dog", "a fox")
    ]
    (socket_url,) = result["sockets"]
    assert socket_url.startswith(f"wss://fal.run/{LCM}/realtime?fal_jwt_token=falmock-rt-")
    # closing without a code is reported by the client itself, as an error with status 1005
    assert [(e["status"], e["isApiError"]) for e in result["late"]] == [(1005, True)]


def test_realtime_x_fal_error_reaches_on_error(node_bin: str, fal_mock: FalMock) -> None:
    fal_mock.on_realtime_error("fal-ai/broken", "INVALID_INPUT", "prompt too long")

    result = run_js(node_bin, fal_mock, "realtime_error")

    assert result["results"] == []
    assert result["errors"] == [
        {
            "name": "ApiError",
            "message": "INVALID_INPUT: prompt too long".casefold(),  # run_js folds ApiError messages
            "isApiError": True,
            "isValidationError": False,
            "status": 400,
            "body": {"type": "x-fal-error", "error": "INVALID_INPUT", "reason": "prompt too long"},
            "requestId": "",
        }
    ]
    assert [(r.route, r.status_code) for r in fal_mock.requests[1:]] == [
        ("realtime.connect", 101),
        ("realtime.message", 400),
    ]


@pytest.mark.fal_mock(allow_unmatched=True)
def test_realtime_without_a_fixture_reaches_on_error_and_is_unmatched(
    node_bin: str, fal_mock: FalMock
) -> None:
    result = run_js(node_bin, fal_mock, "realtime_unmatched")

    reason = (
        "fal_mock: no fixture matches model 'fal-ai/unknown-model' "
        "(WebSocket connection to /fal-ai/unknown-model/realtime)"
    )
    first, closed = result["errors"]
    assert (first["message"], first["status"]) == (f"no_fixture_match: {reason}".casefold(), 400)
    assert (closed["message"], closed["status"]) == (
        "Error closing the connection: fal_mock: no fixture matched".casefold(),
        1008,
    )
    (unmatched,) = fal_mock.unmatched
    assert (unmatched.route, unmatched.model) == ("realtime.connect", "fal-ai/unknown-model")
