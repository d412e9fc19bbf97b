"""The parser refuses what RFC 9112 refuses: over raw sockets, each answer deliberate, each
connection closed after a refusal, and nothing smuggled past it."""

from __future__ import annotations

import socket

import pytest
from rawhttp import exchange, parse_responses, read_until_close

from pytest_falmock import FalMock

HOST = b"Host: 127.0.0.1\r\n"
RUN = b"POST /fal/run/fal-ai/flux/dev HTTP/1.1\r\n"
CHUNKED_BODY = b"2\r\n{}\r\n0\r\n\r\n"

REFUSED = {
    # Transfer-Encoding: exactly "chunked", once (RFC 9112 6.1)
    "vertical tab before chunked": (
        RUN + HOST + b"Transfer-Encoding: \x0bchunked\r\n\r\n" + CHUNKED_BODY,
        400,
    ),
    "gzip, chunked": (RUN + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + CHUNKED_BODY, 501),
    "chunked, then gzip": (RUN + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n" + CHUNKED_BODY, 501),
    "identity": (RUN + HOST + b"Transfer-Encoding: identity\r\n\r\n" + CHUNKED_BODY, 501),
    "chunked twice in one field": (
        RUN + HOST + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + CHUNKED_BODY,
        400,
    ),
    "two Transfer-Encoding fields": (
        RUN + HOST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
        400,
    ),
    "two Transfer-Encoding fields, the second smuggling": (
        RUN + HOST + b"Transfer-Encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n" + CHUNKED_BODY,
        400,
    ),
    # control characters (RFC 9110 5.5, RFC 9112 3.2)
    "NUL in the target": (b"GET /fal/queue/requests/\x00x/status HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "DEL in the target": (b"GET /fal/queue/requests/\x7fx/status HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "tab in the target": (b"GET /fal/queue/requests/\tx/status HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "NUL in a header value": (b"GET /fal/x HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400),
    "bare CR in a header value": (b"GET /fal/x HTTP/1.1\r\n" + HOST + b"X-A: a\rb\r\n\r\n", 400),
    "escape in a header value": (b"GET /fal/x HTTP/1.1\r\n" + HOST + b"X-A: \x1b[31m\r\n\r\n", 400),
    "DEL in a header value": (b"GET /fal/x HTTP/1.1\r\n" + HOST + b"X-A: a\x7f\r\n\r\n", 400),
    # Host (RFC 9112 3.2)
    "HTTP/1.1 without Host": (b"GET /fal/queue/requests/x/status HTTP/1.1\r\n\r\n", 400),
    "two Host fields": (b"GET /fal/x HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400),
    "two different Host fields": (b"GET /fal/x HTTP/1.1\r\n" + HOST + b"host: localhost\r\n\r\n", 400),
    "two Host fields on HTTP/1.0": (b"GET /fal/x HTTP/1.0\r\n" + HOST + HOST + b"\r\n", 400),
    # versions (RFC 9112 2.3)
    "HTTP/1.10": (b"GET /fal/x HTTP/1.10\r\n" + HOST + b"\r\n", 505),
    "HTTP/1.01": (b"GET /fal/x HTTP/1.01\r\n" + HOST + b"\r\n", 505),
    "HTTP/2.0": (b"GET /fal/x HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    "HTTP/11.1": (b"GET /fal/x HTTP/11.1\r\n" + HOST + b"\r\n", 505),
}


@pytest.fixture(scope="module")
def mock() -> FalMock:
    server = FalMock()
    server.on_run("fal-ai/flux/dev", {"ok": 1})
    with server:
        yield server


@pytest.mark.parametrize(("data", "status"), REFUSED.values(), ids=REFUSED.keys())
def test_what_rfc_9112_refuses_is_refused_and_the_connection_closed(
    mock: FalMock, data: bytes, status: int
) -> None:
    follow_up = b"GET /fal/queue/requests/smuggled/status HTTP/1.1\r\n" + HOST + b"\r\n"
    answers = exchange(mock.port, data + follow_up)  # nothing after a refusal is served
    assert [a.status for a in answers] == [status]
    assert answers[0].headers["connection"] == "close"
    assert isinstance(answers[0].json["detail"], str)
    assert mock._server.internal_errors == []


ACCEPTED = {
    "chunked in any case, with spaces": (
        RUN + HOST + b"Transfer-Encoding:   Chunked \r\n\r\n" + CHUNKED_BODY,
        200,
    ),
    "tab and Latin-1 in a header value": (RUN + HOST + b"X-A: a\tb \xe9\r\nContent-Length: 2\r\n\r\n{}", 200),
    "HTTP/1.2 is served as 1.1": (RUN.replace(b"1.1", b"1.2") + HOST + b"Content-Length: 2\r\n\r\n{}", 200),
    "HTTP/1.0 needs no Host": (b"POST /fal/run/fal-ai/flux/dev HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", 200),
}


@pytest.mark.parametrize(("data", "status"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_the_rfc_allows_is_served(mock: FalMock, data: bytes, status: int) -> None:
    close = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    (answer,) = exchange(mock.port, close)
    assert (answer.status, answer.json) == (status, {"ok": 1})


def test_http_1_0_keep_alive_with_chunked_closes_after_the_answer(mock: FalMock) -> None:
    first = (
        b"POST /fal/run/fal-ai/flux/dev HTTP/1.0\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    second = (
        b"POST /fal/run/fal-ai/flux/dev HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"
    )
    answers = exchange(mock.port, first + CHUNKED_BODY + second)
    assert [(a.status, a.headers["connection"]) for a in answers] == [(200, "close")]


def test_http_1_0_keep_alive_without_chunked_stays_open(mock: FalMock) -> None:
    one = b"POST /fal/run/fal-ai/flux/dev HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"
    answers = exchange(mock.port, one + one.replace(b"keep-alive", b"close"))
    assert [(a.status, a.headers["connection"]) for a in answers] == [(200, "keep-alive"), (200, "close")]


def test_a_refused_head_request_gets_no_body(mock: FalMock) -> None:
    with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
        sock.sendall(b"HEAD /fal/\x00 HTTP/1.1\r\n" + HOST + b"\r\n")
        raw = read_until_close(sock)
    (answer,) = parse_responses(raw, head_only=True)
    assert answer.status == 400
    assert raw.endswith(b"\r\n\r\n")  # the head only, though it announces the body's length
