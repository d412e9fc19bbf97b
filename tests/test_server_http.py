"""The HTTP layer over real sockets: keep-alive, pipelining, bodies, streaming, protocol errors."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from rawhttp import chunked, exchange, parse_responses, read_until_close, request
from werkzeug.test import Client
from werkzeug.wrappers import Request

from pytest_falmock import FalMock

FLUX = "fal-ai/flux/dev"
QUEUE = [("Content-Type", "application/json")]
CORS = "access-control-allow-origin"


def cycle(conn: http.client.HTTPConnection, prompt: str = "a cat") -> dict[str, Any]:
    conn.request("POST", f"/fal/queue/{FLUX}", json.dumps({"prompt": prompt}), dict(QUEUE))
    response = conn.getresponse()
    submitted = json.loads(response.read())
    assert response.status == 200, submitted
    conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{submitted['request_id']}/status")
    response = conn.getresponse()
    assert json.loads(response.read())["status"] == "COMPLETED"
    conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{submitted['request_id']}")
    response = conn.getresponse()
    assert response.status == 200
    result: dict[str, Any] = json.loads(response.read())
    return result


# -- connections ------------------------------------------------------------------------------
def test_keep_alive_serves_many_cycles_on_one_connection(fal_mock: FalMock) -> None:
    fal_mock.on_image(FLUX, {"images": [{"url": "https://x/a.png"}]})
    conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=10)
    try:
        conn.connect()
        local = conn.sock.getsockname()
        for i in range(5):
            assert cycle(conn, f"p{i}")["prompt"] == f"p{i}"
        assert conn.sock is not None
        assert conn.sock.getsockname() == local  # http.client would have reconnected after a close
        conn.request("GET", "/fal/queue/requests/nope/status")
        response = conn.getresponse()
        response.read()
        assert response.version == 11
        assert response.getheader("Connection") is None
    finally:
        conn.close()
    assert len(fal_mock.requests) == 16


def test_http_1_0_closes_after_the_answer_unless_keep_alive_is_asked(fal_mock: FalMock) -> None:
    (answer,) = exchange(fal_mock.port, request("GET", "/fal/queue/requests/x/status", version="HTTP/1.0"))
    assert (answer.status, answer.headers["connection"]) == (404, "close")

    with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) as sock:
        keep = request("GET", "/fal/queue/requests/a", [("Connection", "keep-alive")], version="HTTP/1.0")
        sock.sendall(keep)
        sock.sendall(request("GET", "/fal/queue/requests/b", version="HTTP/1.0"))
        first, second = parse_responses(read_until_close(sock))
    assert first.headers["connection"] == "keep-alive"
    assert "Request a not found" in first.json["detail"]
    assert "Request b not found" in second.json["detail"]


def test_connection_close_is_honoured(fal_mock: FalMock) -> None:
    (answer,) = exchange(fal_mock.port, request("GET", "/fal/queue/requests/x"))
    assert answer.headers["connection"] == "close"


def test_pipelined_requests_are_answered_in_order(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    body = b'{"prompt": "p"}'
    data = (
        request("POST", f"/fal/queue/{FLUX}", QUEUE, body, close=False)
        + request("GET", "/fal/queue/requests/one/status", close=False)
        + request("GET", "/fal/queue/requests/two/status")
    )
    submitted, one, two = exchange(fal_mock.port, data)
    assert submitted.status == 200
    assert submitted.json["status"] == "IN_QUEUE"
    assert (one.status, two.status) == (404, 404)
    assert "one" in one.json["detail"]
    assert "two" in two.json["detail"]
    assert [r.route for r in fal_mock.requests] == ["queue.submit", "queue.status", "queue.status"]


def test_leading_empty_lines_and_bare_lf_line_ends_are_tolerated(fal_mock: FalMock) -> None:
    data = b"\r\n\r\nGET /fal/queue/requests/x HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n"
    (answer,) = exchange(fal_mock.port, data)
    assert answer.status == 404
    assert fal_mock.requests[0].request_id == "x"


# -- request bodies ---------------------------------------------------------------------------
def test_a_chunked_request_body_is_decoded(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    payload = {"prompt": "a long prompt " * 20, "seed": 7}
    body = chunked(json.dumps(payload).encode(), size=9)
    body = body.replace(b"\r\n", b";ext=1\r\n", 1)  # a chunk extension is ignored
    body = body[:-2] + b"X-Trailer: yes\r\n\r\n"  # so is a trailer field
    headers = [*QUEUE, ("Transfer-Encoding", "chunked")]
    (answer,) = exchange(fal_mock.port, request("POST", f"/fal/queue/{FLUX}", headers, body))
    assert answer.status == 200
    assert fal_mock.requests[0].input == payload


def test_expect_100_continue_gets_an_interim_answer_before_the_body(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    body = b'{"prompt": "p"}'
    head = request("POST", f"/fal/queue/{FLUX}", [*QUEUE, ("Expect", "100-continue")], body)[: -len(body)]
    with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        interim, final = parse_responses(b"HTTP/1.1 100 Continue\r\n\r\n" + read_until_close(sock))
    assert (interim.status, final.status) == (100, 200)
    assert fal_mock.requests[0].input == {"prompt": "p"}


def test_request_headers_reach_the_journal_joined_and_redacted(fal_mock: FalMock) -> None:
    headers = [("X-Dup", "a"), ("x-dup", "b"), ("Authorization", "Key secret"), ("X-Odd", "  padded  ")]
    exchange(fal_mock.port, request("GET", "/fal/queue/requests/x/status", headers))
    record = fal_mock.requests[0]
    assert record.headers["X-Dup"] == "a,b"
    assert record.headers["authorization"] == "[REDACTED]"
    assert record.headers["X-Odd"] == "padded"
    assert record.headers["Host"] == "127.0.0.1"


def test_the_path_is_percent_decoded_and_the_query_kept_raw(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    target = "/fal/queue/fal-ai/flux%2Fdev?fal_webhook=&x=%C3%A9&x=2"
    (answer,) = exchange(fal_mock.port, request("POST", target, QUEUE, b"{}"))
    assert answer.status == 200
    record = fal_mock.requests[0]
    assert (record.path, record.model) == ("/fal/queue/fal-ai/flux/dev", FLUX)
    assert record.query == {"fal_webhook": "", "x": "é"}


def test_an_absolute_form_target_routes_and_names_its_host(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    target = f"http://localhost:{fal_mock.port}/fal/queue/{FLUX}"
    (answer,) = exchange(fal_mock.port, request("POST", target, QUEUE, b"{}"))
    assert answer.status == 200
    assert answer.json["status_url"].startswith(f"http://localhost:{fal_mock.port}/fal/queue/fal-ai/flux/")


# -- answers ----------------------------------------------------------------------------------
def test_head_sends_the_headers_of_get_without_a_body(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=10)
    try:
        conn.request("POST", f"/fal/queue/{FLUX}", "{}", dict(QUEUE))
        status_path = json.loads(conn.getresponse().read())["status_url"].split(str(fal_mock.port), 1)[1]
        conn.request("GET", status_path)
        full = conn.getresponse().read()
    finally:
        conn.close()
    data = request("HEAD", status_path)
    with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) as sock:
        sock.sendall(data)
        raw = read_until_close(sock)
    (answer,) = parse_responses(raw, head_only=True)
    assert answer.status == 200
    assert int(answer.headers["content-length"]) == len(full)
    assert raw.endswith(b"\r\n\r\n")  # nothing after the head


def test_every_answer_has_cors_date_server_and_json_type(fal_mock: FalMock) -> None:
    (answer,) = exchange(fal_mock.port, request("GET", "/nowhere"))
    assert answer.status == 404
    assert answer.headers[CORS] == "*"
    assert answer.headers["access-control-expose-headers"] == "*"
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["server"] == "fal_mock"
    assert answer.headers["date"].endswith(" GMT")


def test_preflight_is_204_with_the_cors_grants(fal_mock: FalMock) -> None:
    (answer,) = exchange(fal_mock.port, request("OPTIONS", "/fal/queue/anything/at/all"))
    assert answer.status == 204
    assert answer.body == b""
    assert answer.headers[CORS] == "*"
    assert answer.headers["access-control-allow-methods"] == "GET, POST, PUT, OPTIONS"
    assert answer.headers["access-control-allow-headers"] == "*"
    assert "content-length" not in answer.headers
    assert fal_mock.requests == []


EVENTS = [{"partial": "a"}, {"partial": "ab"}, {"text": "abc", "done": True}]
SSE = b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in EVENTS)


def test_a_stream_is_chunked_over_http_1_1_and_keeps_the_connection(fal_mock: FalMock) -> None:
    fal_mock.on_stream("fal-ai/any-llm", EVENTS, times=2)
    first = request("POST", "/fal/run/fal-ai/any-llm/stream", QUEUE, b"{}", close=False)
    second = request("POST", "/fal/run/fal-ai/any-llm/stream", QUEUE, b"{}")
    one, two = exchange(fal_mock.port, first + second)
    for answer in (one, two):
        assert answer.status == 200
        assert answer.headers["transfer-encoding"] == "chunked"
        assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers[CORS] == "*"
        assert answer.body == SSE
    assert "connection" not in one.headers


def test_a_stream_is_close_delimited_over_http_1_0(fal_mock: FalMock) -> None:
    fal_mock.on_stream("fal-ai/any-llm", EVENTS)
    data = request("POST", "/fal/run/fal-ai/any-llm/stream", QUEUE, b"{}", version="HTTP/1.0")
    (answer,) = exchange(fal_mock.port, data)
    assert answer.headers["connection"] == "close"
    assert "transfer-encoding" not in answer.headers
    assert "content-length" not in answer.headers
    assert answer.body == SSE


def streamed_status(fal_mock: FalMock, latency: float) -> list[dict[str, Any]]:
    fal_mock.on_queue(FLUX, {"ok": True}, latency=latency)
    (submitted,) = exchange(fal_mock.port, request("POST", f"/fal/queue/{FLUX}", QUEUE, b"{}"))
    path = f"/fal/queue/fal-ai/flux/requests/{submitted.json['request_id']}/status/stream"
    (answer,) = exchange(fal_mock.port, request("GET", path))
    return [json.loads(line[6:]) for line in answer.body.split(b"\n\n") if line]


def test_a_streamed_status_follows_the_job_to_completion_on_the_mock_clock(fal_mock: FalMock) -> None:
    offset = fal_mock.clock.offset
    events = streamed_status(fal_mock, latency=600)  # virtual time: the stream moves the clock on
    assert [event["status"] for event in events] == ["IN_PROGRESS", "COMPLETED"]
    assert events[-1]["metrics"]["inference_time"] >= 600
    assert fal_mock.clock.offset - offset > 590


@pytest.mark.fal_mock(virtual_time=False)
def test_a_streamed_status_waits_on_the_wall_clock_without_virtual_time(fal_mock: FalMock) -> None:
    started = time.monotonic()
    events = streamed_status(fal_mock, latency=0.15)
    assert time.monotonic() - started >= 0.15
    assert events[0]["status"] == "IN_PROGRESS"
    assert events[-1]["status"] == "COMPLETED"


# -- protocol errors --------------------------------------------------------------------------
PROTOCOL_ERRORS = {
    "not HTTP": (b"GARBAGE\r\n\r\n", 400),
    "bad method": (b"G(T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "bad version": (b"GET / HTTX/1.1\r\n\r\n", 400),
    "HTTP/2": (b"GET / HTTP/2.0\r\n\r\n", 505),
    "header without colon": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColon\r\n\r\n", 400),
    "space in header name": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Name: x\r\n\r\n", 400),
    "folded header": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\r\n  b\r\n\r\n", 400),
    "bad length": (b"POST /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1x\r\n\r\n", 400),
    "negative length": (b"POST /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n", 400),
    "two lengths": (
        b"POST /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "gzip coding": (b"POST /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    "bad chunk size": (
        b"POST /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "chunk without CRLF": (
        b"POST /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        400,
    ),
    "too many headers": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    "huge request line": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
    "huge header": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    "endless head": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: " + b"a" * 80_000, 431),
}


@pytest.mark.parametrize(("data", "status"), PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_malformed_requests_get_a_json_error_and_a_closed_connection(
    fal_mock: FalMock, data: bytes, status: int
) -> None:
    (answer,) = exchange(fal_mock.port, data)
    assert answer.status == status
    assert answer.headers["connection"] == "close"
    assert answer.headers[CORS] == "*"
    assert isinstance(answer.json["detail"], str)
    assert fal_mock._server.internal_errors == []


def test_a_client_that_leaves_mid_request_does_not_disturb_the_server(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    for partial in (
        b"GET /fal/qu",
        b"POST /fal/queue/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc",
    ):
        with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) as sock:
            sock.sendall(partial)
    conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=10)
    try:
        cycle(conn)
    finally:
        conn.close()
    assert fal_mock._server.internal_errors == []


# -- failures inside the server ---------------------------------------------------------------
def test_an_internal_error_is_a_500_and_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with FalMock() as mock:

        def broken(op: Any) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setitem(mock._server.handlers, "queue.result", broken)
        (answer,) = exchange(mock.port, request("GET", "/fal/queue/requests/x"))
        assert answer.status == 500
        assert answer.json == {"detail": "fal_mock internal error: RuntimeError('boom')"}
        assert answer.headers[CORS] == "*"
        problems = mock.problems(allow_unmatched=True)
        assert "internal error" in problems
        assert "RuntimeError: boom" in problems


def test_a_failing_stream_is_reported_and_the_connection_dropped() -> None:
    with FalMock() as mock:
        mock.on_stream("fal-ai/llm", [{"a": 1}, {"b": 2}])
        mock._stores.test_stubs[-1].events = [{"a": 1}, object()]  # not JSON: fails mid-stream
        data = request("POST", "/fal/run/fal-ai/llm/stream", QUEUE, b"{}")
        with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
            sock.sendall(data)
            raw = read_until_close(sock)
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'data: {"a":1}' in raw
        assert not raw.endswith(b"0\r\n\r\n")  # no clean end of the chunked body
        assert "is not JSON serializable" in mock.problems(allow_unmatched=True)


# -- pytest-httpserver's WSGI entry point ----------------------------------------------------
def test_dispatch_delegates_to_the_one_request_path() -> None:
    with FalMock() as mock:
        mock.on_queue(FLUX, {"ok": True})
        mock.on_stream("fal-ai/llm", EVENTS)
        client = Client(Request.application(mock._server.dispatch))

        mock._server.allowed_hosts = frozenset({"h"})  # as FalMock(allow_hosts=["h"]) does
        submitted = client.post(f"/fal/queue/{FLUX}?a=1", json={"prompt": "p"}, headers={"Host": "h:1"})
        assert submitted.status_code == 200
        assert submitted.headers[CORS.title()] == "*"
        assert submitted.json is not None
        assert submitted.json["status_url"].startswith("http://h:1/fal/queue/fal-ai/flux/requests/")
        stream = client.post("/fal/run/fal-ai/llm/stream", json={})
        assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert stream.get_data() == SSE
        assert client.options("/fal/x").status_code == 204
        assert [(r.route, r.query) for r in mock.requests] == [
            ("queue.submit", {"a": "1"}),
            ("run.stream", {}),
        ]


# -- lifecycle --------------------------------------------------------------------------------
def test_start_and_stop_are_restartable() -> None:
    mock = FalMock()
    for _ in range(3):
        mock.start()
        (answer,) = exchange(mock.port, request("GET", "/fal/queue/requests/x"))
        assert answer.status == 404
        mock.stop()
        assert not mock.is_running()
    with pytest.raises(Exception, match="not running"):
        mock._server.stop()


def test_a_header_value_cannot_split_the_answer(fal_mock: FalMock) -> None:
    fal_mock.on_error("fal-ai/bad", 422, error_type="oops\r\nX-Injected: yes\r\n\r\n<html>")
    (answer,) = exchange(fal_mock.port, request("POST", "/fal/run/fal-ai/bad", QUEUE, b"{}"))
    assert answer.status == 422
    assert "x-injected" not in answer.headers
    assert answer.headers["x-fal-error-type"] == "oops  X-Injected: yes    <html>"
    assert answer.json["detail"][0]["type"] == "value_error"


def test_a_large_upload_arrives_whole_and_is_served_back_whole(fal_mock: FalMock) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)
    conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=30)
    try:
        conn.request("POST", "/fal/rest/storage/upload/initiate", '{"file_name": "blob.bin"}', dict(QUEUE))
        path = urlsplit(json.loads(conn.getresponse().read())["upload_url"]).path
        conn.request("PUT", path, data, {"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())["file_url"].endswith("/blob.bin")) == (200, True)
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(len(data))
        assert response.read() == data
    finally:
        conn.close()
