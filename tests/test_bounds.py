"""The server stays bounded under abuse, over real sockets on 127.0.0.1: slow heads and bodies
(slowloris), idle and unread connections, too many connections, no file descriptors left, a
full job store, endless unmatched requests and huge bodies in the journal.

Every wait is bounded (socket timeouts, polling with a deadline) and every count small.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
from rawhttp import exchange, parse_responses, read_until_close, request

from pytest_falmock import FalMock, Settings
from pytest_falmock._http_limits import AcceptGuard, ConnectionLimits

FLUX = "fal-ai/flux/dev"
JSON = [("Content-Type", "application/json")]
SHORT = 0.3
QUICK = Settings(header_timeout=SHORT, body_timeout=SHORT, idle_timeout=SHORT)
BOUND = 10.0  # the longest any wait below may take before it fails the test
#: Float rounding allowance when comparing clock readings.
EPSILON = 1e-9


def eventually(check: Callable[[], bool], within: float = BOUND) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def quick() -> Iterator[FalMock]:
    with FalMock(settings=QUICK) as mock:
        mock.on_queue(FLUX, {"ok": 1})
        yield mock


def connect(mock: FalMock) -> socket.socket:
    return socket.create_connection(("127.0.0.1", mock.port), timeout=BOUND)


def served(mock: FalMock) -> bool:
    (answer,) = exchange(mock.port, request("POST", f"/fal/queue/{FLUX}", JSON, b"{}"))
    return answer.status == 200


# -- slow and silent clients -----------------------------------------------------------------
def test_slowloris_heads_are_cut_off_with_408_while_others_are_served(quick: FalMock) -> None:
    partial = b"GET /fal/queue/requests/x/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    sockets = [connect(quick) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(partial)  # and never the end of the head
        dripping = sockets[0]
        for _ in range(10):  # a byte every 50 ms: each read is in time, the head as a whole is not
            try:
                dripping.sendall(b"a")
            except OSError:
                break
            time.sleep(0.05)
        assert served(quick)
        answers = [parse_responses(read_until_close(sock)) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert {(a.status, a.json["detail"]) for (a,) in answers} == {
        (408, f"The request head did not arrive within {SHORT:g} s")
    }
    assert eventually(lambda: quick._server.connection_count == 0)


def test_a_declared_but_unsent_body_is_cut_off_with_408(quick: FalMock) -> None:
    with connect(quick) as sock:
        sock.sendall(request("POST", f"/fal/queue/{FLUX}", [*JSON, ("Content-Length", "100")], close=False))
        sock.sendall(b'{"prompt": ')  # and nothing more
        (answer,) = parse_responses(read_until_close(sock))
    assert (answer.status, answer.json) == (
        408,
        {"detail": f"The request body did not arrive within {SHORT:g} s"},
    )
    assert quick.requests == []  # never handled


def test_a_silent_connection_and_an_idle_keep_alive_one_are_closed(quick: FalMock) -> None:
    with connect(quick) as silent, connect(quick) as idle:
        idle.sendall(request("GET", "/fal/queue/requests/x/status", close=False))
        (answer,) = parse_responses(idle.recv(65536))
        assert answer.status == 404
        assert read_until_close(idle) == b""  # closed without a word once idle too long
        assert read_until_close(silent) == b""
    assert eventually(lambda: quick._server.connection_count == 0)


def test_a_client_that_never_reads_its_answer_is_cut_off(quick: FalMock) -> None:
    data = os.urandom(32 * 1024 * 1024)  # more than the socket buffers hold
    (upload,) = exchange(
        quick.port, request("POST", "/fal/cdn/files/upload", [("X-Fal-File-Name", "big.bin")], data)
    )
    path = urlsplit(upload.json["access_url"]).path
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(BOUND)
        sock.connect(("127.0.0.1", quick.port))
        sock.sendall(request("GET", path))  # and never read
        assert eventually(lambda: quick._server.connection_count == 0)


def test_slow_handling_and_long_streams_have_no_deadline(quick: FalMock) -> None:
    quick.configure(virtual_time=False)  # the latency really passes (virtual time would skip it)
    quick.on_run("fal-ai/slow", {"late": True}, latency=2 * SHORT)
    quick.on_queue("fal-ai/streamed", {"ok": 2}, latency=2 * SHORT)
    (slow,) = exchange(quick.port, request("POST", "/fal/run/fal-ai/slow", JSON, b"{}"))
    assert (slow.status, slow.json) == (200, {"late": True})
    (job,) = exchange(quick.port, request("POST", "/fal/queue/fal-ai/streamed", JSON, b"{}"))
    path = f"/fal/queue/fal-ai/streamed/requests/{job.json['request_id']}/status/stream"
    (stream,) = exchange(quick.port, request("GET", path))
    events = [json.loads(line[6:]) for line in stream.body.decode().split("\n\n") if line]
    assert events[-1]["status"] == "COMPLETED"


def test_the_default_timeouts_are_generous() -> None:
    settings = Settings()
    assert (settings.header_timeout, settings.body_timeout, settings.idle_timeout) == (30.0, 120.0, 60.0)
    assert (settings.max_connections, settings.max_unmatched, settings.journal_body) == (512, 1000, 65536)
    with pytest.raises(ValueError, match="idle_timeout must be a positive number of seconds"):
        Settings(idle_timeout=0)


# -- too many connections ---------------------------------------------------------------------
def test_connections_beyond_the_cap_get_503_and_the_rest_are_served() -> None:
    with FalMock(settings=Settings(max_connections=3)) as mock:
        mock.on_run(FLUX, {"ok": 1})
        held = [connect(mock) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(request("POST", f"/fal/run/{FLUX}", JSON, b"{}", close=False))
                assert parse_responses(sock.recv(65536))[0].status == 200
            refused = [
                exchange(mock.port, request("POST", f"/fal/run/{FLUX}", JSON, b"{}")) for _ in range(5)
            ]
            assert [[a.status for a in answers] for answers in refused] == [[503]] * 5
            (answer,) = refused[0]
            assert answer.json == {
                "detail": "fal_mock is serving its limit of 3 connections (max_connections); "
                "try again when one closes"
            }
            assert answer.headers["connection"] == "close"
            held.pop().close()
            assert eventually(lambda: mock._server.connection_count == 2)
            (again,) = exchange(mock.port, request("POST", f"/fal/run/{FLUX}", JSON, b"{}"))
            assert again.status == 200
        finally:
            for sock in held:
                sock.close()


# -- no file descriptor left -------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    from pytest_falmock import FalMock
    from pytest_falmock import _http

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, hard), hard))
    accepts = [0]
    real = _http.FastServer.get_request

    def counted(self):
        accepts[0] += 1
        return real(self)

    _http.FastServer.get_request = counted
    mock = FalMock()
    mock.on_run("fal-ai/flux/dev", {"ok": 1})
    mock.start()
    server = mock._server._http
    held = []

    def fill():
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                return

    def say(value):
        print(json.dumps(value), flush=True)

    say(mock.port)
    for line in sys.stdin:
        command = line.strip()
        if command == "fill":
            fill()
            say("full")
        elif command == "no-reserve":  # the emergency descriptor is gone too: only backing off helps
            server.guard.release()
            fill()
            say("full")
        elif command == "measure":
            before, cpu = accepts[0], time.process_time()
            time.sleep(1.0)
            say({"accepts": accepts[0] - before, "cpu": time.process_time() - cpu})
        elif command == "free":
            while held:
                os.close(held.pop())
            say("free")
        elif command == "stop":
            mock.stop()
            say("stopped")
            break
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_out_of_file_descriptors_the_server_answers_503_backs_off_and_keeps_serving(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert child.stdin is not None
    assert child.stdout is not None

    def ask(command: str) -> Any:
        child.stdin.write(command + "\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return json.loads(child.stdout.readline())  # type: ignore[union-attr]

    try:
        port = json.loads(child.stdout.readline())
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)

        def cycle() -> int:
            kept.request("POST", f"/fal/run/{FLUX}", "{}", {"Content-Type": "application/json"})
            response = kept.getresponse()
            response.read()
            return response.status

        assert cycle() == 200
        assert ask("fill") == "full"
        (refused,) = exchange(port, request("POST", f"/fal/run/{FLUX}", JSON, b"{}"))  # the reserve answers
        assert refused.status == 503
        assert "no file descriptor left for a new connection (too many open files)" in refused.json["detail"]
        assert cycle() == 200  # the open connection is still served

        assert ask("no-reserve") == "full"
        waiting = socket.create_connection(("127.0.0.1", port), timeout=BOUND)  # queued by the kernel
        waiting.sendall(request("POST", f"/fal/run/{FLUX}", JSON, b"{}"))
        measured = ask("measure")
        assert measured["accepts"] <= 20, measured  # backing off (spinning would be tens of thousands)
        assert measured["cpu"] < 0.5, measured
        assert cycle() == 200

        assert ask("free") == "free"
        (answer,) = parse_responses(read_until_close(waiting))  # accepted once a descriptor is free
        assert answer.status == 200
        waiting.close()
        kept.close()
        assert ask("stop") == "stopped"
    finally:
        child.kill()
        child.communicate(timeout=BOUND)


# -- the job store at its bound ----------------------------------------------------------------
class NoScan(dict):  # type: ignore[type-arg]
    """A job table that fails the test if anything walks it."""

    def __iter__(self) -> Any:
        raise AssertionError("the job store was scanned")

    def items(self) -> Any:
        raise AssertionError("the job store was scanned")

    def values(self) -> Any:
        raise AssertionError("the job store was scanned")


def _submit(conn: http.client.HTTPConnection, model: str = FLUX) -> str:
    conn.request("POST", f"/fal/queue/{model}", "{}", {"Content-Type": "application/json"})
    request_id: str = json.loads(conn.getresponse().read())["request_id"]
    return request_id


def _status(conn: http.client.HTTPConnection, request_id: str) -> tuple[int, Any]:
    conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{request_id}/status")
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_eviction_never_scans_and_takes_finished_jobs_first_in_completion_order() -> None:
    with FalMock(max_jobs=50) as mock:
        mock.on_queue(FLUX, {"ok": 1})
        mock._stores.jobs = NoScan()
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=BOUND)
        try:
            mock.queue(polls=2)
            pending = [_submit(conn) for _ in range(50)]
            finished_late, finished_early = pending[10], pending[20]
            assert _status(conn, finished_early)[1]["status"] == "IN_PROGRESS"
            assert _status(conn, finished_early)[1]["status"] == "COMPLETED"
            assert _status(conn, finished_late)[1]["status"] == "IN_PROGRESS"
            assert _status(conn, finished_late)[1]["status"] == "COMPLETED"
            mock.queue()
            fresh = [_submit(conn) for _ in range(300)]  # each already finished: they evict each other
            assert len(mock._stores.jobs) == 50
            gone = [finished_early, finished_late, *fresh[:-2]]
            assert all(_status(conn, i)[0] == 404 for i in gone)
            assert all(_status(conn, i)[0] == 202 for i in pending if i not in gone)
        finally:
            conn.close()


def test_when_every_job_is_pending_the_oldest_goes_and_its_poll_says_why() -> None:
    with FalMock(max_jobs=5) as mock:
        mock.on_queue(FLUX, {"ok": 1})
        mock.queue(polls=5)
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=BOUND)
        try:
            ids = [_submit(conn) for _ in range(8)]
            assert [_status(conn, i)[0] for i in ids] == [404] * 3 + [202] * 5
            _, body = _status(conn, ids[0])
            assert body == {
                "detail": f"Request {ids[0]} not found: evicted, the mock keeps at most 5 jobs "
                "(finished ones go first; raise FalMock(max_jobs=...))"
            }
        finally:
            conn.close()


# -- memory: unmatched requests and raw bodies ---------------------------------------------------
def test_unmatched_requests_are_capped_and_the_rest_counted() -> None:
    with FalMock(settings=Settings(max_unmatched=3)) as mock:
        for i in range(10):
            exchange(mock.port, request("POST", f"/fal/run/fal-ai/none-{i}", JSON, b"{}"))
        assert [u.model for u in mock.unmatched] == ["fal-ai/none-0", "fal-ai/none-1", "fal-ai/none-2"]
        report = mock.problems()
        assert report.startswith("fal_mock: 10 requests matched no registered fixture:")
        assert "... and 7 more, not kept (the first 3 are)." in report
        assert len(mock.requests) == 10
        mock.reset()
        assert mock.problems() == ""


def test_the_journal_keeps_a_bounded_prefix_of_raw_bodies_and_the_whole_input() -> None:
    prompt = "p" * 100_000
    with FalMock(settings=Settings(journal_body=1024)) as mock:
        mock.on_run(FLUX, {"ok": 1})
        body = json.dumps({"prompt": prompt}).encode()
        exchange(mock.port, request("POST", f"/fal/run/{FLUX}", JSON, body))
        exchange(mock.port, request("POST", "/fal/nowhere", JSON, body))  # refused by routing
        routed, refused = mock.requests
        assert routed.body == body[:1024]
        assert routed.input == {"prompt": prompt}
        assert (refused.status_code, refused.body) == (404, body[:1024])


def test_the_accept_guard_out_of_descriptors_in_process() -> None:
    """The same steps as above without a real descriptor shortage (the subprocess covers that)."""
    limits = ConnectionLimits(header_timeout=1.0, body_timeout=1.0, idle_timeout=1.0, max_connections=1)
    guard = AcceptGuard(limits, lambda status, message: f"HTTP/1.1 {status} X\r\n\r\n{message}".encode())
    with socket.create_server(("127.0.0.1", 0)) as listener, selectors.DefaultSelector() as selector:
        listener.setblocking(False)
        client = socket.create_connection(listener.getsockname(), timeout=BOUND)
        guard.out_of_descriptors(listener, selector)  # the reserve answers the waiting client
        assert read_until_close(client).startswith(
            b"HTTP/1.1 503 X\r\n\r\nfal_mock has no file descriptor left"
        )
        client.close()
        assert guard.paused_until == 0.0
        guard.release()  # no reserve: pause, longer each time, never past a second
        pauses = []
        for _ in range(10):
            before = time.monotonic()
            guard.out_of_descriptors(listener, selector)
            pauses.append((guard.paused_until - before, guard.paused_until - time.monotonic()))
        expected = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0]
        # the pause starts within the call: seen from before it, at least the step; from after
        # it, at most the step (give or take float rounding)
        assert all(
            longest + EPSILON >= want >= shortest - EPSILON
            for want, (longest, shortest) in zip(expected, pauses)
        ), pauses
        guard.accepted()
        before = time.monotonic()
        guard.out_of_descriptors(listener, selector)
        after = time.monotonic()
        assert (
            guard.paused_until - before + EPSILON >= 0.01 >= guard.paused_until - after - EPSILON
        )  # starts over
