"""Limits and isolation: body limit, file-store escapes, loopback binding, the job bound, clean stop."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
from typing import Optional
from urllib.parse import urlsplit

import pytest
from inner_runs import QUIET
from rawhttp import chunked, exchange, parse_responses, read_until_close, request

from pytest_falmock import FalMock

FLUX = "fal-ai/flux/dev"
JSON = [("Content-Type", "application/json")]
SUBMIT = f"/fal/queue/{FLUX}"
LIMIT = 1024


@pytest.fixture(scope="module")
def small() -> FalMock:
    """A mock with a 1 KiB body limit (module-scoped: these tests only read their own answers)."""
    mock = FalMock(max_body=LIMIT)
    mock.add_fixture_document({"fixtures": [{"match": {"model": FLUX}, "response": {"json": {"ok": 1}}}]})
    with mock:
        yield mock


def cycle_works(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", SUBMIT, '{"prompt": "p"}', dict(JSON))
        request_id = json.loads(conn.getresponse().read())["request_id"]
        conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{request_id}")
        response = conn.getresponse()
        return response.status == 200 and json.loads(response.read()) == {"ok": 1}
    finally:
        conn.close()


# -- the body limit ---------------------------------------------------------------------------
def test_a_declared_body_over_the_limit_is_refused_before_a_byte_is_read(small: FalMock) -> None:
    head = request("POST", SUBMIT, [*JSON, ("Content-Length", str(LIMIT + 1))], close=False)
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as sock:
        sock.sendall(head)  # and never the body: the answer must come anyway
        (answer,) = parse_responses(read_until_close(sock))
    assert answer.status == 413
    assert answer.json == {"detail": f"Request body of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit"}
    assert answer.headers["connection"] == "close"
    assert answer.headers["access-control-allow-origin"] == "*"
    assert cycle_works(small.port)


def test_a_body_at_the_limit_is_accepted(small: FalMock) -> None:
    body = b'{"prompt": "p"}'.ljust(LIMIT)
    (answer,) = exchange(small.port, request("POST", SUBMIT, JSON, body))
    assert answer.status == 200


def test_an_oversized_body_sent_anyway_still_gets_its_413(small: FalMock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=10)
    try:
        conn.request("POST", SUBMIT, b"x" * (4 * LIMIT), dict(JSON))
        response = conn.getresponse()
        assert response.status == 413
        assert "exceeds" in json.loads(response.read())["detail"]
    finally:
        conn.close()
    assert cycle_works(small.port)


def test_a_chunked_body_is_cut_off_at_the_limit(small: FalMock) -> None:
    headers = [*JSON, ("Transfer-Encoding", "chunked")]
    (answer,) = exchange(small.port, request("POST", SUBMIT, headers, chunked(b"x" * (LIMIT + 1), 100)))
    assert answer.status == 413
    assert answer.json == {"detail": f"Request body exceeds the {LIMIT}-byte limit"}


def test_expect_100_continue_over_the_limit_gets_413_and_no_go_ahead(small: FalMock) -> None:
    headers = [*JSON, ("Expect", "100-continue"), ("Content-Length", str(LIMIT * 10))]
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as sock:
        sock.sendall(request("POST", SUBMIT, headers))
        answers = parse_responses(read_until_close(sock))
    assert [a.status for a in answers] == [413]


def test_the_default_limit_is_128_mib_and_refuses_before_reading(fal_mock: FalMock) -> None:
    assert fal_mock._server.max_body == 128 * 1024 * 1024
    head = request("POST", SUBMIT, [("Content-Length", str(128 * 1024 * 1024 + 1))], close=False)
    with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=5) as sock:
        sock.sendall(head)
        (answer,) = parse_responses(read_until_close(sock))
    assert answer.status == 413


# -- uploaded files cannot escape their store -------------------------------------------------
ESCAPES = [
    "/fal/files/abc/../abc/secret.txt",
    "/fal/files/abc/..",
    "/fal/files/../../../../etc/passwd",
    "/fal/files/%2e%2e/%2e%2e/etc/passwd",
    "/fal/files/%2E%2E/secret.txt",
    "/fal/files/abc/%2e%2e",
    "/fal/files/..%2F..%2F..%2Fetc%2Fpasswd",
    "/fal/files/abc%2F..%2F..%2Fetc/passwd",
    "/fal/files/x%2F..%2Fabc/secret.txt",
    "/fal/files/%2e/secret.txt",
    "/fal/files/abc/..%5Csecret.txt",
    "/fal/files/abc/..%5C..%5Cetc%5Cpasswd",
    "/fal/files/abc/secret.txt%00.png",
    "/fal/files/abc/secret.txt/..",
    "/fal/files//abc/secret.txt/x",
    "/fal/files/%252e%252e/secret.txt",
    "/fal/files/abc",
    "/fal/files/file:%2F%2F%2Fetc%2Fpasswd/x",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_a_file_path_cannot_escape_the_upload_store(fal_mock: FalMock, target: str) -> None:
    initiate = request("POST", "/fal/rest/storage/upload/initiate", JSON, b'{"file_name": "secret.txt"}')
    stored_at = urlsplit(exchange(fal_mock.port, initiate)[0].json["upload_url"]).path
    stored = request("PUT", stored_at, [("Content-Type", "text/plain")], b"s3cret")
    assert exchange(fal_mock.port, stored)[0].status == 200
    file_id = stored_at.split("/")[3]
    target = target.replace("/abc/", f"/{file_id}/", 1)  # the escapes start from the real file

    (answer,) = exchange(fal_mock.port, request("GET", target))
    assert answer.status in (404, 405), answer
    assert b"s3cret" not in answer.body
    assert b"root:" not in answer.body
    (put,) = exchange(fal_mock.port, request("PUT", target, [], b"overwritten"))
    assert put.status in (404, 405), put
    (again,) = exchange(fal_mock.port, request("GET", stored_at))
    assert again.body == b"s3cret"
    assert all("/../" not in upload.url and "\\" not in upload.url for upload in fal_mock.uploads)


def test_a_cdn_upload_name_cannot_climb_out_either(fal_mock: FalMock) -> None:
    headers = [("X-Fal-File-Name", "../../../etc/passwd"), ("Content-Type", "text/plain")]
    (answer,) = exchange(fal_mock.port, request("POST", "/fal/cdn/files/upload", headers, b"data"))
    url = answer.json["access_url"]
    tail = url.split("/fal/files/", 1)[1]
    assert tail.count("/") == 1
    assert ".." not in tail.split("/")
    (served,) = exchange(fal_mock.port, request("GET", urlsplit(url).path))
    assert served.body == b"data"


# -- binding ----------------------------------------------------------------------------------
def test_the_server_binds_loopback_by_default(fal_mock: FalMock) -> None:
    for mock in (fal_mock, FalMock().start()):
        try:
            server = mock._server.server
            assert server is not None
            assert server.socket.getsockname()[0] == "127.0.0.1"
            assert mock.url == f"http://127.0.0.1:{mock.port}/fal"
        finally:
            if mock is not fal_mock:
                mock.stop()


@pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 is a loopback address on Linux only")
def test_an_explicit_host_is_honoured() -> None:
    with FalMock(host="127.0.0.2") as mock:
        assert mock._server.server is not None
        assert mock._server.server.socket.getsockname()[0] == "127.0.0.2"
        assert mock.url.startswith("http://127.0.0.2:")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", mock.port), timeout=2).close()


# -- the job store bound ----------------------------------------------------------------------
def _submit(conn: http.client.HTTPConnection) -> str:
    conn.request("POST", SUBMIT, "{}", dict(JSON))
    request_id: str = json.loads(conn.getresponse().read())["request_id"]
    return request_id


def _status(conn: http.client.HTTPConnection, request_id: str) -> int:
    conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{request_id}/status")
    response = conn.getresponse()
    response.read()
    return response.status


def test_the_job_store_is_bounded_and_evicts_the_oldest_jobs() -> None:
    assert FalMock()._stores.max_jobs == 50_000
    with pytest.raises(ValueError, match="max_jobs"):
        FalMock(max_jobs=0)
    with FalMock(max_jobs=3) as mock:
        mock.on_queue(FLUX, {"ok": 1})
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
        try:
            ids = [_submit(conn) for _ in range(5)]
            assert len(mock._stores.jobs) == 3
            assert [_status(conn, i) for i in ids] == [404, 404, 200, 200, 200]
        finally:
            conn.close()


def test_eviction_spares_pending_jobs_while_finished_ones_remain() -> None:
    with FalMock(max_jobs=3) as mock:
        mock.on_queue(FLUX, {"ok": 1})
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
        try:
            mock.queue(polls=50)
            pending = [_submit(conn) for _ in range(2)]
            mock.queue()
            done = [_submit(conn) for _ in range(3)]
            assert list(mock._stores.jobs) == [*pending, done[-1]]
            mock.queue(polls=50)
            later = [_submit(conn) for _ in range(2)]  # the last finished job goes, then the oldest
            assert list(mock._stores.jobs) == [pending[1], *later]
            assert [_status(conn, i) for i in [*pending, *done, *later]] == [
                404,
                202,
                404,
                404,
                404,
                202,
                202,
            ]
        finally:
            conn.close()


# -- a clean stop -----------------------------------------------------------------------------
def _socket_inodes() -> Optional[set[int]]:
    if not os.path.isdir("/proc/self/fd"):
        return None
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_stop_closes_every_connection_and_leaves_no_thread_or_socket() -> None:
    before = set(threading.enumerate())
    mock = FalMock(virtual_time=False)  # the status stream really waits for the slow job
    mock.on_queue(FLUX, {"ok": 1})
    mock.on_queue("fal-ai/slow", {"ok": 2}, latency=60)
    mock.start()
    port = mock.port
    assert mock._server.server is not None
    server_sockets = [mock._server.server.socket]

    idle = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(3)]
    for conn in idle:  # each ends idle on a kept-alive connection
        assert _status(conn, "unknown") == 404
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(b"POST /fal/queue/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly part")
    (slow,) = exchange(port, request("POST", "/fal/queue/fal-ai/slow", JSON, b"{}"))
    streaming = socket.create_connection(("127.0.0.1", port), timeout=10)
    path = f"/fal/queue/fal-ai/slow/requests/{slow.json['request_id']}/status/stream"
    streaming.sendall(request("GET", path))
    assert streaming.recv(4096).startswith(b"HTTP/1.1 200 OK")  # events keep coming every 50 ms
    deadline = time.monotonic() + 5
    while mock._server.connection_count < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mock._server.connection_count == 5
    server_sockets += list(mock._server._http._connections) if mock._server._http else []
    inodes = {os.fstat(s.fileno()).st_ino for s in server_sockets}
    assert len(inodes) == 6

    mock.stop()  # neither the unfinished body nor the endless stream holds it up: no thread is left

    assert [t for t in threading.enumerate() if t not in before] == []
    assert all(s.fileno() == -1 for s in server_sockets)
    open_inodes = _socket_inodes()
    if open_inodes is not None:
        assert inodes.isdisjoint(open_inodes)
    half.settimeout(5)
    assert half.recv(100) == b""  # the server closed its end
    read_until_close(streaming)  # ends: the stream was cut off
    for sock in (half, streaming):
        sock.close()
    for conn in idle:
        assert conn.sock is not None
        conn.sock.settimeout(5)
        assert conn.sock.recv(100) == b""
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_connection_opened_while_stopping_is_refused_or_closed() -> None:
    mock = FalMock().start()
    assert mock._server._http is not None
    http_server = mock._server._http
    http_server.closing = True  # as during stop(): new connections are closed at once
    try:
        with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as sock:
            sock.sendall(request("GET", "/fal/queue/requests/x"))
            assert read_until_close(sock) == b""
    finally:
        mock.stop()


def test_a_connection_thread_that_cannot_start_drops_only_that_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Exhausted(threading.Thread):
        def start(self) -> None:
            if self.name == "fal_mock-connection":
                raise RuntimeError("can't start new thread")
            super().start()

    with FalMock() as mock:
        monkeypatch.setattr(threading, "Thread", Exhausted)
        with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as sock:
            sock.sendall(request("GET", "/fal/queue/requests/x"))
            assert read_until_close(sock) == b""
        monkeypatch.undo()
        assert mock._server.connection_count == 0
        (answer,) = exchange(mock.port, request("GET", "/fal/queue/requests/x"))
        assert answer.status == 404


def test_the_session_server_leaves_no_thread_or_connection_behind(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import threading

        BEFORE = set()

        def pytest_sessionstart(session):
            BEFORE.update(threading.enumerate())

        def pytest_unconfigure(config):
            left = [t.name for t in threading.enumerate() if t not in BEFORE and t.is_alive()]
            with open("threads-left.txt", "w") as out:
                out.write(repr(left))
        """
    )
    pytester.makepyfile(
        """
        import http.client

        KEPT = []

        def test_leaves_an_idle_keep_alive_connection(fal_mock):
            conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=10)
            conn.request("GET", "/fal/queue/requests/x/status")
            assert conn.getresponse().read()
            KEPT.append(conn)  # still open, idle, when the session ends
        """
    )
    result = pytester.runpytest_inprocess(*QUIET)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "threads-left.txt").read_text() == "[]"


def test_a_port_in_use_is_an_os_error_not_an_exit(capfd: pytest.CaptureFixture[str]) -> None:
    with FalMock() as first:
        second = FalMock(port=first.port)
        with pytest.raises(OSError, match="in use"):
            second.start()
        assert not second.is_running()
        assert exchange(first.port, request("GET", "/fal/queue/requests/x"))[0].status == 404
    assert capfd.readouterr().err == ""
