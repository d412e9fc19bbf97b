"""Uploads and streaming with the real ``fal_client`` (sync API; async twins elsewhere; realtime in
test_realtime.py)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import fal_client
import httpx
import pytest

from pytest_falmock import FalMock, Upload

Http = Callable[..., Any]
EVENTS = [{"partial": "a"}, {"partial": "ab"}, {"text": "abc", "done": True}]


def file_url_prefix(mock: FalMock) -> str:
    return mock.url + "/files/"


# -- CDN (fal_v3, the default) ------------------------------------------------------------
def test_upload_goes_through_the_cdn_token_flow_and_is_served_back(fal_mock: FalMock, call: Http) -> None:
    first = fal_client.upload(b"hello", "text/plain", file_name="hello.txt")
    second = fal_client.upload("héllo again", "text/markdown")

    assert first.startswith(file_url_prefix(fal_mock))
    assert first.endswith("/hello.txt")
    assert [(r.method, r.path, r.route) for r in fal_mock.requests] == [
        ("POST", "/fal/rest/storage/auth/token", "storage.token"),  # once: the token is cached
        ("POST", "/fal/cdn/files/upload", "cdn.upload"),
        ("POST", "/fal/cdn/files/upload", "cdn.upload"),
    ]
    token, upload = fal_mock.requests[:2]
    assert token.query == {"storage_type": "fal-cdn-v3"}
    assert upload.headers["X-Fal-File-Name"] == "hello.txt"
    assert upload.headers["Content-Type"] == "text/plain"
    assert fal_mock.uploads == [
        Upload(first, "hello.txt", "text/plain", b"hello", via="cdn"),
        Upload(second, "upload.md", "text/markdown", "héllo again".encode(), via="cdn"),
    ]
    served = call("GET", first)
    assert (served.status, served.body, served.headers["Content-Type"]) == (200, b"hello", "text/plain")
    served = call("GET", second)
    assert (served.body, served.headers["Content-Type"]) == ("héllo again".encode(), "text/markdown")


def test_cdn_token_expires_at_is_iso_8601_with_an_explicit_offset(fal_mock: FalMock, call: Http) -> None:
    reply = call("POST", fal_mock.url + "/rest/storage/auth/token?storage_type=fal-cdn-v3", {})

    body = reply.json
    assert reply.status == 200
    assert set(body) == {"token", "token_type", "base_url", "expires_at"}
    assert (body["token_type"], body["base_url"]) == ("Bearer", fal_mock.url + "/cdn")
    assert body["expires_at"].endswith("+00:00")
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires - datetime.now(timezone.utc) > timedelta(minutes=30)


# -- storage (repository="fal": initiate, then PUT) -----------------------------------------
def test_upload_to_the_fal_repository_initiates_then_puts(fal_mock: FalMock, call: Http) -> None:
    url = fal_client.upload(b"\x00\x01binary", "application/octet-stream", "blob.bin", repository="fal")

    initiate, put = fal_mock.requests
    assert (initiate.method, initiate.path, initiate.route) == (
        "POST",
        "/fal/rest/storage/upload/initiate",
        "storage.initiate",
    )
    assert initiate.query == {"storage_type": "gcs"}
    assert initiate.input == {"file_name": "blob.bin", "content_type": "application/octet-stream"}
    assert (put.method, put.route, put.path) == ("PUT", "files.put", url.removeprefix(fal_mock.base_url))
    assert fal_mock.uploads == [
        Upload(url, "blob.bin", "application/octet-stream", b"\x00\x01binary", via="storage")
    ]
    served = call("GET", url)
    assert (served.body, served.headers["Content-Type"]) == (b"\x00\x01binary", "application/octet-stream")


@pytest.mark.parametrize("repository", ["fal_v3", "fal"])
def test_a_file_name_that_is_not_url_safe_is_served_at_its_url(
    fal_mock: FalMock, call: Http, repository: str
) -> None:
    url = fal_client.upload(b"odd name", "text/plain", file_name="100% réel? #1.txt", repository=repository)

    assert url.endswith("/100%25%20r%C3%A9el_%20_1.txt")  # "?" and "#" are not kept in a name
    served = call("GET", url)
    assert (served.status, served.body) == (200, b"odd name")
    assert [(u.url, u.file_name) for u in fal_mock.uploads] == [(url, "100% réel_ _1.txt")]


@pytest.mark.skipif(
    not hasattr(fal_client, "StorageSettings"), reason="upload lifecycle= arrived after fal-client 0.13"
)
def test_upload_lifecycle_headers_are_recorded(fal_mock: FalMock) -> None:
    lifecycle = fal_client.StorageSettings(expires_in=3600)

    url = fal_client.upload(b"short-lived", "text/plain", file_name="t.txt", lifecycle=lifecycle)

    upload = fal_mock.requests[-1]
    assert upload.route == "cdn.upload"
    assert json.loads(upload.headers["X-Fal-Object-Lifecycle"]) == {"expiration_duration_seconds": 3600}
    assert [u.data for u in fal_mock.uploads if u.url == url] == [b"short-lived"]


# -- upload_file / upload_image -----------------------------------------------------------------
def test_upload_file_sends_the_name_and_guessed_content_type(
    fal_mock: FalMock, call: Http, tmp_path: Path
) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"steps": 4}))

    url = fal_client.upload_file(path)

    assert url.endswith("/settings.json")
    (upload,) = fal_mock.uploads
    assert (upload.url, upload.file_name, upload.content_type) == (url, "settings.json", "application/json")
    assert call("GET", url).json == {"steps": 4}


def test_upload_image_encodes_a_pillow_image(fal_mock: FalMock, call: Http) -> None:
    from PIL import Image

    image = Image.new("RGB", (3, 2), (255, 0, 0))
    expected = io.BytesIO()
    image.save(expected, format="png")

    url = fal_client.upload_image(image, format="png")

    (upload,) = fal_mock.uploads
    assert (upload.url, upload.content_type, upload.data) == (url, "image/png", expected.getvalue())
    served = call("GET", url)
    assert served.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(served.body)) as back:
        assert (back.size, back.getpixel((0, 0))) == ((3, 2), (255, 0, 0))


def test_an_unknown_file_url_is_a_404(fal_mock: FalMock, call: Http) -> None:
    reply = call("GET", fal_mock.url + "/files/0123/nothing.txt")

    assert (reply.status, reply.json) == (404, {"detail": "No uploaded file at /fal/files/0123/nothing.txt"})


# -- streaming ------------------------------------------------------------------------------
def test_stream_yields_each_event(fal_mock: FalMock) -> None:
    fal_mock.on_stream("fal-ai/any-llm", events=EVENTS)

    assert list(fal_client.stream("fal-ai/any-llm", {"prompt": "abc"})) == EVENTS
    (request,) = fal_mock.requests
    assert (request.method, request.path, request.route) == (
        "POST",
        "/fal/run/fal-ai/any-llm/stream",
        "run.stream",
    )
    assert (request.model, request.input) == ("fal-ai/any-llm", {"prompt": "abc"})
    assert request.headers["Accept"] == "text/event-stream"
    fal_mock.assert_called("fal-ai/any-llm", times=1)


def test_stream_wire_format_is_one_data_event_each(fal_mock: FalMock, call: Http) -> None:
    fal_mock.on_stream("fal-ai/any-llm", events=EVENTS)

    reply = call("POST", fal_mock.url + "/run/fal-ai/any-llm/stream", {"prompt": "abc"})

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.body == b"".join(
        b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in EVENTS
    )


@pytest.mark.fal_mock(allow_unmatched=True)
def test_stream_without_a_fixture_surfaces_as_an_sse_error(fal_mock: FalMock) -> None:
    # fal_client never checks the HTTP status of a stream, only its content type.
    with pytest.raises(httpx.TransportError, match="text/event-stream"):
        list(fal_client.stream("fal-ai/any-llm", {}))
    assert [r.status_code for r in fal_mock.requests] == [404]
