"""Property-based abuse over real HTTP: random methods, paths, headers, queries and bodies.

Whatever arrives, the server answers with a deliberate status (never a 500-class crash; the
only 5xx it sends on purpose are 501 "not supported" and 505 "HTTP version"), never hangs
(every socket has a timeout), records no internal error, and still serves a normal cycle.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import string
from typing import Iterator, Optional
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawhttp import chunked, parse_responses, read_until_close

from pytest_falmock import FalMock
from pytest_falmock._http_wire import split_target

LIMIT = 256 * 1024
DELIBERATE_5XX = {501, 505}
#: What makes a head 400 whatever follows: a control character in the target, two Host headers.
HEAD_FLAW = re.compile("[\x00-\x20\x7f]")
#: Answers given before a request is routed (they cannot tell a control path).
PRE_ROUTING = {400, 408, 413, 414, 431, 501, 505}
TIMEOUT = 10.0
FUZZ = settings(
    max_examples=int(os.environ.get("FALMOCK_FUZZ_EXAMPLES", "120")),  # more for a soak run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def mock() -> Iterator[FalMock]:
    server = FalMock(max_body=LIMIT)
    server.on_image(re.compile("flux"), {"images": [{"url": "https://x/a.png"}]})
    server.on_stream(re.compile("llm"), [{"a": 1}, {"b": 2}])
    server.on_queue(re.compile("slow"), {"ok": 1}, latency=0.05)
    with server:
        yield server


TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH", "TRACE", "CONNECT", "get"]),
    st.text(alphabet=TOKEN, min_size=1, max_size=10),
)
WORDS = [
    "fal",
    "queue",
    "run",
    "rest",
    "cdn",
    "files",
    "requests",
    "status",
    "stream",
    "cancel",
    "submit",
    "storage",
    "upload",
    "initiate",
    "auth",
    "token",
    "tokens",
    "multipart",
    "fal-ai",
    "flux",
    "dev",
    "llm",
    "slow",
    "workflows",
    "comfy",
    "__falmock",
    "health",
    "fixtures",
    "reset",
    "..",
    ".",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%",
    "%zz",
    "%C3%A9",
]
SEGMENTS = st.one_of(
    st.sampled_from([*WORDS, ""]),
    st.text(max_size=12).map(lambda s: quote(s, safe="")),
    st.binary(max_size=6).map(lambda b: b.translate(None, b" \r\n").decode("latin-1")),
)
PATHS = st.builds(
    lambda prefix, parts, slash: prefix + "/".join(parts) + slash,
    st.sampled_from(["/fal/", "/fal/queue/", "/fal/run/", "/fal/files/", "/", "//", "/__falmock/", "*"]),
    st.lists(SEGMENTS, max_size=8),
    st.sampled_from(["", "/"]),
)
QUERIES = st.one_of(
    st.just(""),
    st.sampled_from(
        ["logs=1", "fal_webhook=http://127.0.0.1:1/h", "fal_webhook=http://evil.example/", "a&b=&=c"]
    ),
    st.text(max_size=40).map(lambda s: quote(s, safe="=&%+")),
)
HOSTS = st.sampled_from(
    [
        "queue.fal.run",
        "QUEUE.FAL.RUN:443",
        "https://fal.run/x",
        "fal.run",
        "rest.fal.ai",
        "rest.alpha.fal.ai",
        "v3.fal.media",
        "evil.example",
        "",
        " ",
        "[::1]:80",
        "[::1",
        "127.0.0.1",
        "queue.fal.run.evil.example",
        "%00",
        "a" * 300,
        "http://",
        "://",
        ":",
        "queue.fal.run:x",
    ]
)
URLS = st.sampled_from(
    [
        "https://queue.fal.run/fal-ai/flux/dev",
        "http://fal.run/fal-ai/flux/dev?x=1",
        "https://queue.fal.run/fal-ai/flux/requests/abc/status",
        "https://rest.fal.ai/storage/upload/initiate",
        "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3",
        "https://fal.run/fal-ai/llm/stream",
        "ftp://x",
        "//queue.fal.run/a",
        "https://",
        "not a url",
        "https://[::1/",
        "http://u:p@queue.fal.run:99999/x",
        "https://evil.example/fal-ai/flux/dev",
        "https://queue.fal.run",
        "https://queue.fal.run/%2e%2e/x",
    ]
)
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=60
)
HEADERS = st.lists(
    st.one_of(
        st.tuples(st.just("x-fal-target-host"), st.one_of(HOSTS, HEADER_TEXT)),
        st.tuples(st.just("x-fal-target-url"), st.one_of(URLS, HEADER_TEXT)),
        st.tuples(st.sampled_from(["Host", "host"]), st.one_of(HOSTS, HEADER_TEXT)),
        st.tuples(
            st.sampled_from(
                ["Content-Type", "Authorization", "X-Fal-File-Name", "Accept", "Cookie", "Expect"]
            ),
            st.one_of(st.sampled_from(["application/json", "100-continue", "../../x", "Key k"]), HEADER_TEXT),
        ),
        st.tuples(st.text(alphabet=TOKEN, min_size=1, max_size=20), HEADER_TEXT),
    ),
    max_size=8,
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.sampled_from([b"\xff\xfe\xfd", b'{"prompt": "\xc3\x28"}', b"\xed\xa0\x80", b"\x00" * 10]),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda prompt: json.dumps({"prompt": prompt}).encode(), st.text(max_size=50)),
    st.sampled_from([10, 500, 990, 5000, 200_000]).map(lambda d: b"[" * d + b"]" * d),
    st.sampled_from([10, 900, 5000]).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.sampled_from([b'{"a":' * 5000, b"[" * 100_000]),
    st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 3 * LIMIT]).map(lambda n: b"x" * n),
    st.just(json.dumps({"prompt": "p" * (LIMIT - 20)}).encode()),
)


def send(port: int, data: bytes) -> bytes:
    """Send one request, half-close, read until the server closes; a timeout is a hang (fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) and closed before all was sent
        return read_until_close(sock)


def build(
    method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes, version: str, chunk: bool
) -> bytes:
    target = path + ("?" + query if query else "")
    fields = [
        (n, v) for n, v in headers if n.lower() not in ("content-length", "transfer-encoding", "connection")
    ]
    if chunk:
        fields.append(("Transfer-Encoding", "chunked"))
        payload = chunked(body, 4096)
    else:
        fields.append(("Content-Length", str(len(body))))
        payload = body
    fields.append(("Connection", "close"))
    if not any(n.lower() == "host" for n, _ in fields):  # else nearly every request is a 400
        fields.insert(0, ("Host", "127.0.0.1"))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    return head.encode("latin-1") + payload


def check_answers(mock: FalMock, raw: bytes, head_only: bool, target: Optional[str] = None) -> list[int]:
    """Status of every final answer in ``raw``; each one deliberate, none a crash.

    Fal routes grant CORS; the control API family grants it only on errors found before
    routing (malformed HTTP, a body over the limit).
    """
    control = target is not None and split_target(target)[0].startswith("/__falmock/")
    finals = [a for a in parse_responses(raw, head_only) if a.status >= 200]
    for final in finals:
        assert final.status < 500 or final.status in DELIBERATE_5XX, final
        cors = final.headers.get("access-control-allow-origin")
        if control:
            assert cors is None or final.status in PRE_ROUTING, final
        elif target is not None:
            assert cors == "*", final
        else:
            assert cors in ("*", None), final
    assert mock._server.internal_errors == []
    return [final.status for final in finals]


def cycle_works(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/fal/queue/fal-ai/flux/dev", '{"prompt": "after"}', {"Content-Type": "x"})
        submitted = json.loads(conn.getresponse().read())
        conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{submitted['request_id']}/status")
        assert json.loads(conn.getresponse().read())["status"] == "COMPLETED"
        conn.request("GET", f"/fal/queue/fal-ai/flux/requests/{submitted['request_id']}")
        assert json.loads(conn.getresponse().read())["prompt"] == "after"
    finally:
        conn.close()


def test_random_requests_never_crash_or_hang_the_server(mock: FalMock) -> None:
    @FUZZ
    @given(
        method=METHODS,
        path=PATHS,
        query=QUERIES,
        headers=HEADERS,
        body=BODIES,
        version=st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        chunk=st.booleans(),
    )
    def run(
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        version: str,
        chunk: bool,
    ) -> None:
        data = build(method, path, query, headers, body, version, chunk and version == "HTTP/1.1")
        target = path + ("?" + query if query else "")
        (status,) = check_answers(mock, send(mock.port, data), method == "HEAD", target)
        flawed_head = HEAD_FLAW.search(target) is not None or sum(n.lower() == "host" for n, _ in headers) > 1
        if len(body) > LIMIT and not flawed_head:  # a flawed head is refused before its body
            assert status == 413

    run()
    cycle_works(mock.port)
    assert mock._server.internal_errors == []


def test_random_bytes_never_crash_or_hang_the_server(mock: FalMock) -> None:
    @FUZZ
    @given(
        data=st.one_of(
            st.binary(min_size=1, max_size=400),
            st.builds(
                lambda a, b: b"GET /fal/" + a + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b + b"\r\n\r\n",
                st.binary(),
                st.binary(),
            ),
            st.builds(
                lambda b: (
                    b"POST /fal/run/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b
                ),
                st.binary(),
            ),
        )
    )
    def run(data: bytes) -> None:
        # Several requests may hide in the bytes, and an incomplete one is dropped unanswered;
        # whatever is answered is well-formed and deliberate.
        check_answers(mock, send(mock.port, data), head_only=False)

    run()
    cycle_works(mock.port)


FOUND = {
    "unbalanced bracket in x-fal-target-url": (
        b"GET /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"x-fal-target-url: https://[::1/\r\nConnection: close\r\n\r\n",
        400,
    ),
    "unbalanced bracket in the target": (
        b"GET //[x/fal?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        404,
    ),
    "vertical tab in the target": (b"GET /fal/\x0b/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "HEAD refused for its size": (
        b"HEAD /fal/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
        + str(LIMIT + 1).encode()
        + b"\r\n\r\n",
        413,
    ),
}


@pytest.mark.parametrize(("data", "status"), FOUND.values(), ids=FOUND.keys())
def test_cases_the_fuzzer_found(mock: FalMock, data: bytes, status: int) -> None:
    head_only = data.startswith(b"HEAD")
    assert check_answers(mock, send(mock.port, data), head_only=head_only) == [status]
