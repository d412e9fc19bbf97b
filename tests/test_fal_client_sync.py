"""The real synchronous ``fal_client`` against ``fal_mock``: queue, run, errors, timeouts."""

from __future__ import annotations

from typing import Any

import fal_client
import pytest
from fal_client import Completed, FalClientHTTPError, FalClientTimeoutError, InProgress, Queued

from pytest_falmock import FalMock

FLUX = "fal-ai/flux/dev"
IMAGE = {"images": [{"url": "https://v3.fal.media/files/cat.png"}], "seed": 42}
VALIDATION = [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]


def routes(mock: FalMock) -> list[tuple[str, str, dict[str, str]]]:
    return [(r.method, r.route or "", dict(r.query)) for r in mock.requests]


def messages(status: Any) -> list[str]:
    return [entry["message"] for entry in status.logs]


# -- subscribe ----------------------------------------------------------------------------
@pytest.mark.fal_queue(polls_before_in_progress=2, polls_before_completed=3)
def test_subscribe_with_logs_sees_queued_in_progress_completed(fal_mock: FalMock) -> None:
    fal_mock.on_image(FLUX, IMAGE)
    enqueued: list[str] = []
    updates: list[Any] = []

    result = fal_client.subscribe(
        FLUX,
        {"prompt": "a cat"},
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )

    assert result == {
        "images": [
            {
                "url": "https://v3.fal.media/files/cat.png",
                "width": 1024,
                "height": 1024,
                "content_type": "image/png",
            }
        ],
        "seed": 42,
        "timings": {"inference": 0},
        "has_nsfw_concepts": [False],
        "prompt": "a cat",
    }
    assert [type(u) for u in updates] == [Queued, InProgress, Completed]
    assert updates[0] == Queued(position=1)
    assert messages(updates[1]) == ["Job enqueued.", "Job started processing."]
    assert messages(updates[2]) == ["Job enqueued.", "Job started processing.", "Job completed."]
    assert {(entry["level"], entry["source"]) for entry in updates[2].logs} == {("INFO", "user")}
    assert (updates[2].error, updates[2].error_type) == (None, None)
    assert set(updates[2].metrics) == {"inference_time"}
    submit = fal_mock.requests[0]
    assert enqueued == [submit.request_id]
    assert submit.input == {"prompt": "a cat"}
    assert routes(fal_mock) == [
        ("POST", "queue.submit", {}),
        ("GET", "queue.status", {"logs": "true"}),
        ("GET", "queue.status", {"logs": "true"}),
        ("GET", "queue.status", {"logs": "true"}),
        ("GET", "queue.status", {"logs": "false"}),
        ("GET", "queue.result", {}),
    ]
    assert {r.path for r in fal_mock.requests[1:]} == {
        f"/fal/queue/fal-ai/flux/requests/{submit.request_id}/status",
        f"/fal/queue/fal-ai/flux/requests/{submit.request_id}",
    }
    fal_mock.assert_called(FLUX, times=1)


def test_subscribe_without_updates_returns_the_result(fal_mock: FalMock) -> None:
    fal_mock.on_queue("fal-ai/whisper", {"text": "hello"})

    assert fal_client.subscribe("fal-ai/whisper", {"audio_url": "https://x/a.mp3"}) == {"text": "hello"}
    assert [r.route for r in fal_mock.requests] == ["queue.submit", "queue.status", "queue.result"]


# -- submit and handles -------------------------------------------------------------------
def test_submit_then_handle_status_get_and_module_level_helpers(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})

    handle = fal_client.submit(FLUX, {"prompt": "cat"})
    rid = handle.request_id

    assert handle.status() == fal_client.status(FLUX, rid)
    assert isinstance(handle.status(with_logs=True), Completed)
    assert handle.get() == {"n": 1}
    assert fal_client.result(FLUX, rid) == {"n": 1}
    assert fal_client.sync_client.get_handle(FLUX, rid) == handle
    assert handle.status_url == f"{fal_mock.url}/queue/fal-ai/flux/requests/{rid}/status"
    assert handle.response_url == f"{fal_mock.url}/queue/fal-ai/flux/requests/{rid}"
    assert handle.cancel_url == f"{fal_mock.url}/queue/fal-ai/flux/requests/{rid}/cancel"


def test_get_handle_for_a_namespaced_endpoint_equals_the_submitted_handle(fal_mock: FalMock) -> None:
    fal_mock.on_queue("workflows/acme/my-flow", {"n": 1})

    handle = fal_client.submit("workflows/acme/my-flow", {})

    assert fal_client.sync_client.get_handle("workflows/acme/my-flow", handle.request_id) == handle
    assert handle.get() == {"n": 1}


@pytest.mark.fal_queue(polls_before_in_progress=3)
def test_handle_cancel_while_queued_then_status_is_completed_with_the_cancellation(
    fal_mock: FalMock,
) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    handle = fal_client.submit(FLUX, {"prompt": "cat"})

    assert handle.status() == Queued(position=2)
    assert handle.cancel() is None
    status = handle.status()

    assert isinstance(status, Completed)
    assert (status.error, status.error_type) == ("Request was cancelled", "request_cancelled")
    assert status == handle.status()
    with pytest.raises(FalClientHTTPError) as excinfo:
        handle.get()
    assert (excinfo.value.status_code, excinfo.value.message) == (400, "Request was cancelled")
    assert [r.status_code for r in fal_mock.requests if r.route == "queue.cancel"] == [200]


@pytest.mark.fal_queue(polls=4)
def test_module_level_cancel_status_result(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    rid = fal_client.submit(FLUX, {"prompt": "cat"}).request_id

    assert isinstance(fal_client.status(FLUX, rid, with_logs=True), InProgress)
    assert fal_client.cancel(FLUX, rid) is None
    status = fal_client.status(FLUX, rid)

    assert isinstance(status, Completed)
    assert (status.error, status.error_type) == ("Request was cancelled", "request_cancelled")
    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.result(FLUX, rid)
    assert excinfo.value.status_code == 400


def test_cancel_after_completion_raises_already_completed(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    handle = fal_client.submit(FLUX, {})

    with pytest.raises(FalClientHTTPError) as excinfo:
        handle.cancel()

    assert (excinfo.value.status_code, excinfo.value.message) == (400, '{"status":"ALREADY_COMPLETED"}')
    assert handle.get() == {"n": 1}


def test_unknown_request_id_is_a_404(fal_mock: FalMock) -> None:
    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.status(FLUX, "00000000-0000-0000-0000-000000000000")

    assert excinfo.value.status_code == 404
    assert excinfo.value.message == "Request 00000000-0000-0000-0000-000000000000 not found"


# -- run ------------------------------------------------------------------------------------
def test_run_returns_the_payload_and_records_headers(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/fast-sdxl", {"images": []}, route="run")

    result = fal_client.run("fal-ai/fast-sdxl", {"prompt": "cat"}, hint="runner-1", start_timeout=30)

    assert result == {"images": []}
    (request,) = fal_mock.requests
    assert (request.method, request.path, request.route) == ("POST", "/fal/run/fal-ai/fast-sdxl", "run")
    assert request.input == {"prompt": "cat"}
    assert request.headers["X-Fal-Runner-Hint"] == "runner-1"
    assert request.headers["X-Fal-Request-Timeout"] == "30.0"
    assert request.headers["Authorization"] == "[REDACTED]"
    assert request.headers["User-Agent"].startswith("fal-client/")


# -- timeouts -------------------------------------------------------------------------------
def test_subscribe_client_timeout_expires_against_a_slow_job(fal_mock: FalMock) -> None:
    fal_mock.on_queue("fal-ai/slow", {"n": 1}, latency=3)

    with pytest.raises(FalClientTimeoutError) as excinfo:
        fal_client.subscribe("fal-ai/slow", {}, client_timeout=1.5)

    submit = fal_mock.requests[0]
    assert excinfo.value.request_id == submit.request_id
    assert submit.headers["X-Fal-Request-Timeout"] == "1.5"
    # The client cancels the job on expiry (its abandoned poller stops at the timeout).
    cancels = [r for r in fal_mock.requests if r.route == "queue.cancel"]
    assert [(r.request_id, r.status_code) for r in cancels] == [(submit.request_id, 200)]


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("error_type", [None, "content_policy_violation"])
def test_on_error_fails_a_queue_job_with_that_status_and_detail(
    fal_mock: FalMock, error_type: str | None
) -> None:
    fal_mock.on_error(FLUX, status=422, detail=VALIDATION, error_type=error_type)
    updates: list[Any] = []

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.subscribe(FLUX, {}, on_queue_update=updates.append)

    error = excinfo.value
    assert (error.status_code, error.message, error.error_type) == (422, VALIDATION, error_type)
    assert error.response_headers.get("x-fal-error-type") == error_type
    submit = fal_mock.requests[0]
    assert error.response_headers["x-fal-request-id"] == submit.request_id
    (completed,) = updates
    assert completed.error == "Request failed with status code 422"
    assert completed.error_type == (error_type or "http_error")


@pytest.mark.parametrize("error_type", [None, "content_policy_violation"])
def test_on_error_fails_a_run_with_that_status_and_detail(fal_mock: FalMock, error_type: str | None) -> None:
    fal_mock.on_error("fal-ai/fast-sdxl", status=422, detail=VALIDATION, error_type=error_type)

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.run("fal-ai/fast-sdxl", {})

    error = excinfo.value
    assert (error.status_code, error.message, error.error_type) == (422, VALIDATION, error_type)
    assert error.response_headers.get("x-fal-error-type") == error_type
    assert [r.status_code for r in fal_mock.requests] == [422]


def test_on_error_string_detail(fal_mock: FalMock) -> None:
    fal_mock.on_error("fal-ai/fast-sdxl", status=500, detail="boom", error_type="internal_error")

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.run("fal-ai/fast-sdxl", {})

    assert (excinfo.value.status_code, excinfo.value.message) == (500, "boom")
    assert excinfo.value.error_type == "internal_error"


def test_on_error_times_then_succeed_for_queue_jobs(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    fal_mock.on_error(FLUX, status=422, detail=VALIDATION, times=2)  # newest first: tried before on_queue

    for _ in range(2):
        with pytest.raises(FalClientHTTPError) as excinfo:
            fal_client.subscribe(FLUX, {})
        assert excinfo.value.status_code == 422

    assert fal_client.subscribe(FLUX, {}) == {"n": 1}
    fal_mock.assert_called(FLUX, times=3)


def test_client_retries_429_so_times_gives_fail_then_succeed(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/fast-sdxl", {"ok": True})
    fal_mock.on_error("fal-ai/fast-sdxl", status=429, detail="Too many requests", times=2)

    assert fal_client.run("fal-ai/fast-sdxl", {}) == {"ok": True}
    assert [r.status_code for r in fal_mock.requests] == [429, 429, 200]


def test_client_does_not_retry_a_503_carrying_a_request_id(fal_mock: FalMock) -> None:
    fal_mock.on_error(
        "fal-ai/fast-sdxl", status=503, detail="Runner disconnected", error_type="runner_disconnected"
    )

    with pytest.raises(FalClientHTTPError) as excinfo:
        fal_client.run("fal-ai/fast-sdxl", {})

    assert (excinfo.value.status_code, excinfo.value.message) == (503, "Runner disconnected")
    assert excinfo.value.error_type == "runner_disconnected"
    assert len(fal_mock.requests) == 1
