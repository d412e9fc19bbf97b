"""Every ``_async`` twin of ``fal_client`` against ``fal_mock``.

Each scenario runs twice: under pytest-asyncio (``@pytest.mark.asyncio``) and inside a plain
synchronous test with ``asyncio.run``.
"""

from __future__ import annotations

import inspect
import io
import tempfile
from pathlib import Path
from typing import Any

import fal_client
import httpx
import pytest
from async_twins import both_ways
from fal_client import Completed, FalClientHTTPError, FalClientTimeoutError, InProgress, Queued

from pytest_falmock import FalMock, Upload

FLUX = "fal-ai/flux/dev"
VALIDATION = [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]


async def get_handle(application: str, request_id: str) -> fal_client.AsyncRequestHandle:
    """``async_client.get_handle`` is a coroutine from fal-client 1.0, a plain method before."""
    handle: Any = fal_client.async_client.get_handle(application, request_id)
    if inspect.isawaitable(handle):
        handle = await handle
    assert isinstance(handle, fal_client.AsyncRequestHandle)
    return handle


# -- subscribe ----------------------------------------------------------------------------------
async def subscribe_with_updates(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    updates: list[Any] = []
    enqueued: list[str] = []

    result = await fal_client.subscribe_async(
        FLUX, {"prompt": "cat"}, with_logs=True, on_enqueue=enqueued.append, on_queue_update=updates.append
    )

    assert result == {"n": 1}
    assert [type(u) for u in updates] == [Queued, InProgress, Completed]
    assert updates[0] == Queued(position=1)
    assert [e["message"] for e in updates[2].logs] == [
        "Job enqueued.",
        "Job started processing.",
        "Job completed.",
    ]
    assert enqueued == [fal_mock.requests[0].request_id]
    assert [(r.route, dict(r.query)) for r in fal_mock.requests] == [
        ("queue.submit", {}),
        ("queue.status", {"logs": "true"}),
        ("queue.status", {"logs": "true"}),
        ("queue.status", {"logs": "true"}),
        ("queue.status", {"logs": "false"}),
        ("queue.result", {}),
    ]


test_subscribe_async, test_subscribe_async_asyncio_run = both_ways(
    subscribe_with_updates, pytest.mark.fal_queue(polls_before_in_progress=2, polls_before_completed=3)
)


# -- submit and handles -------------------------------------------------------------------------
async def submit_then_handle(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})

    handle = await fal_client.submit_async(FLUX, {"prompt": "cat"})
    rid = handle.request_id

    assert await handle.status() == await fal_client.status_async(FLUX, rid)
    assert isinstance(await handle.status(with_logs=True), Completed)
    assert await handle.get() == {"n": 1}
    assert await fal_client.result_async(FLUX, rid) == {"n": 1}
    assert await get_handle(FLUX, rid) == handle
    assert handle.status_url == f"{fal_mock.url}/queue/fal-ai/flux/requests/{rid}/status"


test_submit_async, test_submit_async_asyncio_run = both_ways(submit_then_handle)


async def cancel_while_queued(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    handle = await fal_client.submit_async(FLUX, {})
    other = await fal_client.submit_async(FLUX, {})

    assert await handle.status() == Queued(position=2)
    assert await handle.cancel() is None
    assert await fal_client.cancel_async(FLUX, other.request_id) is None

    for rid in (handle.request_id, other.request_id):
        status = await fal_client.status_async(FLUX, rid)
        assert isinstance(status, Completed)
        assert (status.error, status.error_type) == ("Request was cancelled", "request_cancelled")
        with pytest.raises(FalClientHTTPError) as excinfo:
            await fal_client.result_async(FLUX, rid)
        assert (excinfo.value.status_code, excinfo.value.message) == (400, "Request was cancelled")
    assert await handle.status() == await fal_client.status_async(FLUX, handle.request_id)


test_cancel_async, test_cancel_async_asyncio_run = both_ways(
    cancel_while_queued, pytest.mark.fal_queue(polls_before_in_progress=3)
)


# -- run and stream -------------------------------------------------------------------------------
async def run_and_stream(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/fast-sdxl", {"images": []})
    events = [{"partial": "a"}, {"text": "ab", "done": True}]
    fal_mock.on_stream("fal-ai/any-llm", events=events)

    assert await fal_client.run_async("fal-ai/fast-sdxl", {"prompt": "cat"}) == {"images": []}
    assert [e async for e in fal_client.stream_async("fal-ai/any-llm", {"prompt": "ab"})] == events
    assert [(r.method, r.path, r.route) for r in fal_mock.requests] == [
        ("POST", "/fal/run/fal-ai/fast-sdxl", "run"),
        ("POST", "/fal/run/fal-ai/any-llm/stream", "run.stream"),
    ]


test_run_and_stream_async, test_run_and_stream_async_asyncio_run = both_ways(run_and_stream)


# -- uploads --------------------------------------------------------------------------------------
async def uploads(fal_mock: FalMock) -> None:
    from PIL import Image

    cdn = await fal_client.upload_async(b"hello", "text/plain", file_name="hello.txt")
    storage = await fal_client.upload_async(b"bytes", "application/octet-stream", "b.bin", repository="fal")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "notes.txt"
        path.write_bytes(b"notes")
        from_file = await fal_client.upload_file_async(path)
    image = Image.new("RGB", (2, 2), (0, 255, 0))
    png = io.BytesIO()
    image.save(png, format="png")
    from_image = await fal_client.upload_image_async(image, format="png")

    assert fal_mock.uploads == [
        Upload(cdn, "hello.txt", "text/plain", b"hello", via="cdn"),
        Upload(storage, "b.bin", "application/octet-stream", b"bytes", via="storage"),
        Upload(from_file, "notes.txt", "text/plain", b"notes", via="cdn"),
        Upload(from_image, "upload.png", "image/png", png.getvalue(), via="cdn"),
    ]
    assert [r.route for r in fal_mock.requests] == [
        "storage.token",
        "cdn.upload",
        "storage.initiate",
        "files.put",
        "cdn.upload",
        "cdn.upload",
    ]
    async with httpx.AsyncClient(trust_env=False) as client:
        for upload in fal_mock.uploads:
            served = await client.get(upload.url)
            assert (served.content, served.headers["Content-Type"]) == (upload.data, upload.content_type)


test_uploads_async, test_uploads_async_asyncio_run = both_ways(uploads)


# -- errors ---------------------------------------------------------------------------------------
async def errors(fal_mock: FalMock) -> None:
    fal_mock.on_error(FLUX, status=422, detail=VALIDATION, error_type="content_policy_violation")
    fal_mock.on_run("fal-ai/fast-sdxl", {"ok": True})
    fal_mock.on_error("fal-ai/fast-sdxl", status=422, detail=VALIDATION, times=1)

    with pytest.raises(FalClientHTTPError) as queued:
        await fal_client.subscribe_async(FLUX, {})
    with pytest.raises(FalClientHTTPError) as ran:
        await fal_client.run_async("fal-ai/fast-sdxl", {})

    assert (queued.value.status_code, queued.value.message) == (422, VALIDATION)
    assert queued.value.error_type == "content_policy_violation"
    assert queued.value.response_headers["x-fal-error-type"] == "content_policy_violation"
    assert (ran.value.status_code, ran.value.message, ran.value.error_type) == (422, VALIDATION, None)
    assert "x-fal-error-type" not in ran.value.response_headers
    assert await fal_client.run_async("fal-ai/fast-sdxl", {}) == {"ok": True}  # times=1 is used up


test_errors_async, test_errors_async_asyncio_run = both_ways(errors)


async def retried_429(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/fast-sdxl", {"ok": True})
    fal_mock.on_error("fal-ai/fast-sdxl", status=429, detail="Too many requests", times=2)

    assert await fal_client.run_async("fal-ai/fast-sdxl", {}) == {"ok": True}
    assert [r.status_code for r in fal_mock.requests] == [429, 429, 200]


test_retry_async, test_retry_async_asyncio_run = both_ways(retried_429)


# -- timeouts -------------------------------------------------------------------------------------
async def client_timeout(fal_mock: FalMock) -> None:
    fal_mock.on_queue("fal-ai/slow", {"n": 1}, latency=3)

    with pytest.raises(FalClientTimeoutError) as excinfo:
        await fal_client.subscribe_async("fal-ai/slow", {}, client_timeout=1.5)

    submit = fal_mock.requests[0]
    assert excinfo.value.request_id == submit.request_id
    assert submit.headers["X-Fal-Request-Timeout"] == "1.5"
    assert [(r.route, r.status_code) for r in fal_mock.requests if r.route != "queue.status"] == [
        ("queue.submit", 200),
        ("queue.cancel", 200),
    ]


test_client_timeout_async, test_client_timeout_async_asyncio_run = both_ways(client_timeout)


# -- a user-built AsyncClient ---------------------------------------------------------------------
async def own_async_client(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    client = fal_client.AsyncClient()

    assert await client.subscribe(FLUX, {}) == {"n": 1}
    assert await client.run(FLUX, {}) == {"n": 1}
    assert (await client.upload(b"x", "text/plain")).startswith(fal_mock.url + "/files/")


test_own_async_client, test_own_async_client_asyncio_run = both_ways(own_async_client)


# -- the README's async example, as written there ---------------------------------------------------
@pytest.mark.asyncio
async def test_readme_async_example(fal_mock: FalMock) -> None:
    fal_mock.on_image("fal-ai/flux/dev", {"images": [{"url": "https://example.com/cat.png"}]})
    fal_mock.on_stream("fal-ai/any-llm", events=[{"partial": "a"}, {"text": "ab", "done": True}])

    result = await fal_client.subscribe_async("fal-ai/flux/dev", arguments={"prompt": "a cat"})
    events = [event async for event in fal_client.stream_async("fal-ai/any-llm", {"prompt": "ab"})]

    assert result["images"][0]["url"] == "https://example.com/cat.png"
    assert events[-1] == {"text": "ab", "done": True}
    assert [r.route for r in fal_mock.requests] == [
        "queue.submit",
        "queue.status",
        "queue.result",
        "run.stream",
    ]
