"""Multipart uploads: ``fal_client`` over 100 MiB (CDN v3) and the wire rules both clients rely on.

``@fal-ai/client``'s multipart flow (over 90 MiB) runs in ``test_js_client.py``; the memory
bound of a 300 MiB upload is checked against the standalone server in ``test_memory.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import fal_client
import httpx
import pytest
from httpclient import http
from rawhttp import chunked, exchange, read_until_close, request

from pytest_falmock import FalMock, Upload

Http = Callable[..., Any]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def big() -> bytes:
    """101 MiB (over fal_client's 100 MiB multipart threshold) whose 10 MiB parts all differ."""
    return (os.urandom(MiB + 13) * 102)[: 101 * MiB]


def sha256_of(url: str) -> str:
    digest = hashlib.sha256()
    with httpx.stream("GET", url) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == 101 * MiB
        for piece in response.iter_bytes():
            digest.update(piece)
    return digest.hexdigest()


def check_multipart_upload(mock: FalMock, url: str, data: bytes) -> None:
    assert url.startswith(mock.url + "/files/")
    assert url.endswith("/big.bin")
    assert sha256_of(url) == hashlib.sha256(data).hexdigest()
    (upload,) = mock.uploads
    assert (upload.url, upload.file_name, upload.content_type, upload.size, upload.via) == (
        url,
        "big.bin",
        "application/octet-stream",
        len(data),
        "multipart",
    )
    routes = [r.route for r in mock.requests]
    assert routes[:2] == ["storage.token", "cdn.upload_multipart"]
    assert sorted(routes[2:13]) == ["files.upload_part"] * 11
    assert routes[13:] == ["files.complete_multipart", "files.get"]
    parts = mock.requests[2:13]
    assert sorted(int(r.path.rsplit("/", 1)[1]) for r in parts) == list(range(1, 12))
    assert all(r.path.startswith(url.removeprefix(mock.base_url) + "/multipart/") for r in parts)
    # every part is journaled as a 64 KiB prefix (Settings.journal_body); the ten 10 MiB ones
    # were spooled to disk, the last (1 MiB) was not
    assert sorted(len(r.body) for r in parts) == [64 * 1024] * 11


def test_fal_client_uploads_101_mib_in_parts(fal_mock: FalMock, big: bytes) -> None:
    url = fal_client.upload(big, "application/octet-stream", file_name="big.bin")

    check_multipart_upload(fal_mock, url, big)


def test_fal_client_async_uploads_101_mib_in_parts(fal_mock: FalMock, big: bytes) -> None:
    async def upload() -> str:
        return await fal_client.upload_async(big, "application/octet-stream", file_name="big.bin")

    url = asyncio.run(upload())

    check_multipart_upload(fal_mock, url, big)


# -- the wire -------------------------------------------------------------------------------------
def start_cdn(mock: FalMock, call: Http, name: str = "clip.bin") -> tuple[str, str]:
    answer = call(
        "POST",
        mock.url + "/cdn/files/upload/multipart",
        raw=b"",
        headers={"X-Fal-File-Name": name, "Content-Type": "video/mp4"},
    )
    assert answer.status == 200
    assert set(answer.json) == {"access_url", "uploadId"}
    return answer.json["access_url"], answer.json["uploadId"]


def put_part(call: Http, base: str, number: int, data: bytes) -> dict[str, Any]:
    answer = call("PUT", f"{base}/{number}", raw=data, headers={"Content-Type": "video/mp4"})
    assert answer.status == 200, answer.body
    assert answer.json == {"partNumber": number, "etag": answer.headers["ETag"]}
    return dict(answer.json)


def test_parts_may_arrive_concurrently_and_out_of_order(fal_mock: FalMock, call: Http) -> None:
    url, upload_id = start_cdn(fal_mock, call)
    base = f"{url}/multipart/{upload_id}"
    pieces = [bytes([n]) * (1000 + n) for n in range(1, 9)]
    listed: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda n=n: listed.append(put_part(call, base, n, pieces[n - 1])))
        for n in reversed(range(1, 9))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    done = call("POST", f"{base}/complete", {"parts": listed})  # in the order they finished

    assert (done.status, done.json) == (200, {"access_url": url})
    served = call("GET", url)
    assert (served.body, served.headers["Content-Type"]) == (b"".join(pieces), "video/mp4")
    assert [(u.url, u.size, u.via) for u in fal_mock.uploads] == [(url, len(served.body), "multipart")]


def test_the_js_flow_initiates_through_rest_and_reads_the_etag_from_the_body(
    fal_mock: FalMock, call: Http
) -> None:
    started = call(
        "POST",
        fal_mock.url + "/rest/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
        {"content_type": "audio/wav", "file_name": "take.wav"},
    ).json
    file_url, upload_url = started["file_url"], started["upload_url"]
    assert file_url.endswith("/take.wav")
    assert upload_url.startswith(file_url + "/multipart/")

    parts = [put_part(call, upload_url, n, b"RIFF" * n) for n in (1, 2)]
    done = call("POST", upload_url + "/complete", {"parts": parts})

    assert done.status == 200
    assert call("GET", file_url).body == b"RIFF" * 3
    assert fal_mock.uploads[0].content_type == "audio/wav"


def test_a_missing_or_mismatched_part_is_a_400_that_says_which(fal_mock: FalMock, call: Http) -> None:
    url, upload_id = start_cdn(fal_mock, call)
    base = f"{url}/multipart/{upload_id}"
    one, two, three = (put_part(call, base, n, b"x" * n) for n in (1, 2, 3))

    def complete(body: Any) -> tuple[int, str]:
        answer = call("POST", f"{base}/complete", body)
        return answer.status, answer.json["detail"]

    prefix = f"Cannot complete multipart upload {upload_id}: "
    assert complete({"parts": [one, three]}) == (
        400,
        prefix + "part 2 is missing: parts must be numbered 1..2 without gaps",
    )
    assert complete({"parts": [one, two, three, {"partNumber": 4, "etag": '"x"'}]}) == (
        400,
        prefix + "part 4 was never uploaded (parts received: 1, 2, 3)",
    )
    assert complete({"parts": [one, {**two, "etag": '"stale"'}, three]}) == (
        400,
        prefix + f"part 2: etag '\"stale\"' does not match the uploaded part's {two['etag']!r}",
    )
    assert complete({"parts": [one, one]})[1] == prefix + "a part number is listed twice"
    assert complete({"parts": []})[1].startswith(prefix + 'the body must be {"parts": [')
    assert complete({"parts": [{"partNumber": "1", "etag": 1}]})[1].startswith(prefix + "parts[0] must be")
    assert fal_mock.uploads == []  # a failed complete leaves the upload open

    assert call("POST", f"{base}/complete", {"parts": [three, one, two]}).status == 200
    assert call("GET", url).body == b"x" * 6
    again = call("POST", f"{base}/complete", {"parts": [one, two, three]})
    assert again.status == 404
    assert again.json["detail"].startswith(f"No multipart upload {upload_id} in progress")


def test_a_part_sent_again_replaces_the_first_and_gets_a_new_etag(fal_mock: FalMock, call: Http) -> None:
    url, upload_id = start_cdn(fal_mock, call)
    base = f"{url}/multipart/{upload_id}"
    first = put_part(call, base, 1, b"old")
    second = put_part(call, base, 1, b"new")
    assert first["etag"] != second["etag"]
    assert call("POST", f"{base}/complete", {"parts": [first]}).status == 400
    assert call("POST", f"{base}/complete", {"parts": [second]}).status == 200
    assert call("GET", url).body == b"new"


def test_bad_part_urls(fal_mock: FalMock, call: Http) -> None:
    url, upload_id = start_cdn(fal_mock, call)
    base = f"{url}/multipart/{upload_id}"
    for number in ("0", "10001", "99999999999"):
        answer = call("PUT", f"{base}/{number}", raw=b"x")
        assert (answer.status, answer.json["detail"]) == (
            400,
            f"Part number {number} is out of range: parts are numbered 1 to 10000",
        )
    assert call("PUT", f"{base}/first", raw=b"x").status == 404
    assert call("GET", f"{base}/1").status == 405
    assert call("GET", f"{base}/complete").status == 405
    unknown = call("PUT", f"{url}/multipart/nope/1", raw=b"x")
    assert unknown.status == 404
    other_file = call("PUT", f"{fal_mock.url}/files/abc/other.bin/multipart/{upload_id}/1", raw=b"x")
    assert other_file.status == 404  # an upload id belongs to its file URL
    assert call("POST", f"{base}/complete", raw=b"{not json").status == 400
    assert call("POST", fal_mock.url + "/rest/storage/upload/complete-multipart", {}).status == 501


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts open files in /proc")
def test_spooled_parts_live_in_temporary_files_removed_at_reset(fal_mock: FalMock, call: Http) -> None:
    def spooled() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if "fal_mock-" in _target(fd) or "(deleted)" in _target(fd))

    before = spooled()
    url, upload_id = start_cdn(fal_mock, call)
    for number in (1, 2):
        put_part(call, f"{url}/multipart/{upload_id}", number, b"p" * (5 * MiB))
    assert spooled() == before + 2

    upload = next(iter(fal_mock.uploads), None)
    fal_mock.reset()

    assert spooled() == before
    assert upload is None  # not completed: nothing to read, nothing left on disk


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


# -- big bodies on the wire -------------------------------------------------------------------------
def test_a_chunked_body_past_the_spool_threshold_arrives_whole(fal_mock: FalMock) -> None:
    data = os.urandom(5 * MiB + 3)
    initiate = request("POST", "/fal/rest/storage/upload/initiate", [], b'{"file_name": "blob.bin"}')
    path = urlsplit(exchange(fal_mock.port, initiate)[0].json["upload_url"]).path
    sent = request("PUT", path, [("Transfer-Encoding", "chunked")], chunked(data, 2 * MiB))
    (answer,) = exchange(fal_mock.port, sent)
    assert answer.status == 200
    (upload,) = fal_mock.uploads
    assert (upload.size, upload.data) == (len(data), data)
    assert upload == Upload(upload.url, "blob.bin", "application/octet-stream", data, via="storage")
    assert upload != Upload(
        upload.url, "blob.bin", "application/octet-stream", data[:-1] + b"?", via="storage"
    )
    assert repr(upload) == (
        f"Upload(url={upload.url!r}, file_name='blob.bin', content_type='application/octet-stream', "
        f"size={len(data)}, via='storage')"
    )
    assert b"".join(upload.chunks(MiB)) == data
    with pytest.raises(AttributeError, match="read-only"):
        upload.via = "cdn"  # type: ignore[misc]
    fal_mock.reset()
    with pytest.raises(ValueError, match="the mock drops uploads when their test ends"):
        upload.data  # noqa: B018


def test_a_client_that_goes_away_mid_body_leaves_nothing_behind(fal_mock: FalMock) -> None:
    with socket.create_connection(("127.0.0.1", fal_mock.port)) as sock:
        sock.sendall(request("PUT", "/fal/files/f00d/gone.bin", [("Content-Length", str(8 * MiB))]))
        sock.sendall(b"x" * MiB)
    assert http("GET", fal_mock.base_url + "/__falmock/health").status == 200  # still serving
    assert fal_mock.uploads == []
    assert fal_mock.problems() == ""


def test_a_served_file_that_shrank_on_disk_ends_the_connection(fal_mock: FalMock, tmp_path: Path) -> None:
    sample = tmp_path / "clip.mp4"
    sample.write_bytes(b"m" * 100_000)
    url = "https://v3.fal.media/files/clip.mp4"
    document = {
        "fixtures": [
            {
                "match": {"model": "fal-ai/kling"},
                "response": {"json": {"video": {"url": url}}},
                "media": {url: {"file": "clip.mp4", "content_type": "video/mp4"}},
            }
        ]
    }
    (tmp_path / "fal.json").write_text(json.dumps(document))
    with FalMock() as mock:
        mock.load_fixtures(tmp_path / "fal.json")
        served = http("POST", mock.url + "/run/fal-ai/kling", {}).json["video"]["url"]
        sample.write_bytes(b"m" * 10)  # the size the mock announced no longer holds

        with socket.create_connection(("127.0.0.1", mock.port), timeout=30) as sock:
            sock.sendall(request("GET", urlsplit(served).path, close=False))
            answer = read_until_close(sock)  # a keep-alive request: only the mock ends it
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: 100000\r\n" in head + b"\r\n"
        assert body == b"m" * 10  # what is left, then the connection ends: the client sees it short
        assert http("GET", mock.url + "/files/x/y").status == 404
