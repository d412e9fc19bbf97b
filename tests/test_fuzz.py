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

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawhttp import chunked, parse_responses, read_until_close
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pytest_falmock import FalMock
from pytest_falmock._http_wire import split_target

LIMIT = 256 * 1024
LCM = "fal-ai/fast-lcm-diffusion"
DELIBERATE_5XX = {501, 505}
#: What makes a head 400 whatever follows: a control character in the target, two Host headers.
HEAD_FLAW = re.compile("[\x00-\x20\x7f]")
#: Answers given before a request is routed (they cannot tell a control path).
PRE_ROUTING = {400, 408, 413, 414, 431, 501, 505}
TIMEOUT = 10.0
#: A WebSocket answer comes at once or not at all (a hang fails the example).
WS_TIMEOUT = 5.0
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
    server.on_image("fal-ai/gen", {"images": [{"width": 8, "height": 8}, {"content_type": "image/jpeg"}]})
    server.on_video("fal-ai/gen-video", {"video": {}})
    server.on_realtime(LCM, lambda message: {"echo": message} if isinstance(message, dict) else {"other": 1})
    server.on_websocket("fal-ai/socket", lambda frame: [frame, frame])
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


# -- the routes issues 9-13 added: files, multipart, storage, realtime, JWKS, control ------------
def _live_ids(mock: FalMock) -> dict[str, str]:
    """Real ids for the fuzzer to aim at: an issued upload URL and a multipart upload under way."""
    issued = http_json(mock, "POST", "/fal/rest/storage/upload/initiate", {"file_name": "f.bin"})
    started = http_json(mock, "POST", "/fal/rest/storage/upload/initiate-multipart", {"file_name": "m.bin"})
    generated = http_json(mock, "POST", "/fal/run/fal-ai/gen", {})["images"]
    return {
        "issued": split_target(issued["upload_url"].split(str(mock.port), 1)[1])[0],
        "multipart": split_target(started["upload_url"].split(str(mock.port), 1)[1])[0],
        "generated": split_target(generated[0]["url"].split(str(mock.port), 1)[1])[0],
    }


def http_json(mock: FalMock, method: str, path: str, body: object) -> dict:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert isinstance(answer, dict)
    return answer


SPECS = st.one_of(
    st.sampled_from(
        ["8x8", "1024x1024", "video", "audio", "0x8", "8x0", "99999x1", "8x8x8", "9" * 5000 + "x1"]
    ),
    st.sampled_from(["%EF%BC%91x1", "x8", "8x", "-1x8", "%00", ".."]),
    SEGMENTS,
)
NAMES = st.one_of(
    st.sampled_from(["generated_image_0.png", "generated_image_1.jpg", "generated_video.mp4", "x.wav"]),
    st.sampled_from(["a.avif", "a", ".png", "a.PNG", "%2F.png"]),
    SEGMENTS,
)
NEW_ROUTE_PATHS = st.one_of(
    st.builds(lambda spec, name: f"/fal/files/generated/{spec}/{name}", SPECS, NAMES),
    st.sampled_from(
        [
            "/fal/rest/storage/upload/initiate",
            "/fal/rest/storage/upload/initiate-multipart",
            "/fal/rest/storage/upload/complete-multipart",
            "/fal/rest/storage/auth/token",
            "/fal/cdn/files/upload",
            "/fal/cdn/files/upload/multipart",
            "/fal/rest/tokens",
            "/fal/rest/tokens/",
            "/fal/rest/.well-known/jwks.json",
            "/__falmock/advance",
            "/__falmock/unmatched",
            "/__falmock/fixtures",
            "/__falmock/requests",
        ]
    ),
    st.builds(lambda a, b: f"/fal/files/{a}/{b}", SEGMENTS, NAMES),
    st.builds(
        lambda a, b, c, d: f"/fal/files/{a}/{b}/multipart/{c}/{d}",
        SEGMENTS,
        NAMES,
        SEGMENTS,
        st.one_of(st.sampled_from(["1", "0", "10000", "10001", "complete", "99999999999"]), SEGMENTS),
    ),
)
PARTS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "partNumber": st.one_of(st.integers(-2, 10_002), st.booleans(), st.text(max_size=3)),
            "etag": st.one_of(st.text(max_size=10), st.integers()),
        },
    ),
    max_size=4,
)
NEW_ROUTE_BODIES = st.one_of(
    BODIES,
    st.builds(lambda parts: json.dumps({"parts": parts}).encode(), st.one_of(PARTS, JSON_VALUES)),
    st.builds(
        lambda seconds: json.dumps({"seconds": seconds}).encode(),
        st.one_of(st.floats(allow_nan=False), st.integers(-(10**400), 10**400), JSON_VALUES),
    ),
    st.builds(
        lambda name, content_type: json.dumps({"file_name": name, "content_type": content_type}).encode(),
        st.one_of(st.text(max_size=30), JSON_VALUES),
        st.one_of(st.sampled_from(["image/png", "text/html\r\nX: y", ""]), JSON_VALUES),
    ),
    st.just(b"[" + b"{}," * 3000 + b"{}]"),
)
NEW_ROUTE_HEADERS = st.lists(
    st.one_of(
        st.tuples(
            st.just("Content-Type"),
            st.sampled_from(["application/json", "text/plain", "application/octet-stream", "image/png"]),
        ),
        st.tuples(
            st.just("X-Fal-File-Name"), st.one_of(st.sampled_from(["../x", "a b.png", ""]), HEADER_TEXT)
        ),
        st.tuples(st.just("Origin"), st.sampled_from(["https://evil.example", "http://localhost:3000"])),
        st.tuples(st.just("Accept"), st.sampled_from(["text/event-stream", "*/*"])),
    ),
    max_size=4,
)


SECONDS = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([1e308, 3.2e9, 1e9, -1, 0]),
    st.integers(-(10**400), 10**400),
    JSON_VALUES,
)
Request = tuple[str, str, list[tuple[str, str]], bytes]


def _new_route_requests(live: dict[str, str]) -> st.SearchStrategy[Request]:
    """Requests to the routes issues 9-13 added, each family with the method it takes (so the
    fuzzer gets past the 405s to the parsing), then anything to any of them."""
    as_json = [("Content-Type", "application/json")]
    part_paths = st.builds(
        lambda tail: f"{live['multipart']}/{tail}", st.sampled_from(["1", "2", "0", "10001", "x"])
    )
    return st.one_of(
        st.tuples(
            st.sampled_from(["GET", "HEAD"]),
            st.one_of(st.builds(lambda spec, name: f"/fal/files/generated/{spec}/{name}", SPECS, NAMES)),
            st.just([]),
            st.just(b""),
        ),
        st.tuples(
            st.just("POST"),
            st.just("/__falmock/advance"),
            st.just(as_json),
            st.builds(lambda seconds: json.dumps({"seconds": seconds}).encode(), SECONDS),
        ),
        st.tuples(st.just("PUT"), part_paths, NEW_ROUTE_HEADERS, BODIES),
        st.tuples(
            st.just("POST"),
            st.just(f"{live['multipart']}/complete"),
            st.just(as_json),
            st.builds(lambda parts: json.dumps({"parts": parts}).encode(), st.one_of(PARTS, JSON_VALUES)),
        ),
        st.tuples(
            st.just("POST"),
            st.sampled_from(
                [
                    "/fal/rest/storage/upload/initiate",
                    "/fal/rest/storage/upload/initiate-multipart",
                    "/fal/cdn/files/upload",
                    "/fal/cdn/files/upload/multipart",
                    "/fal/rest/tokens/",
                ]
            ),
            NEW_ROUTE_HEADERS,
            NEW_ROUTE_BODIES,
        ),
        st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
            st.one_of(NEW_ROUTE_PATHS, st.sampled_from(list(live.values()))),
            NEW_ROUTE_HEADERS,
            NEW_ROUTE_BODIES,
        ),
    )


def test_random_requests_to_the_new_routes_never_crash_or_hang_the_server(mock: FalMock) -> None:
    @FUZZ
    @given(data=_new_route_requests(_live_ids(mock)))
    def run(data: Request) -> None:
        method, path, headers, body = data
        raw = build(method, path, "", headers, body, "HTTP/1.1", False)
        check_answers(mock, send(mock.port, raw), method == "HEAD", path)

    run()
    cycle_works(mock.port)
    assert mock._server.internal_errors == []


MSGPACK_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
WS_MESSAGES = st.lists(
    st.one_of(
        st.binary(max_size=200),
        MSGPACK_VALUES.map(lambda v: msgpack.packb(v)),
        JSON_VALUES.map(json.dumps),
        st.text(max_size=50),
        st.just(65536).map(lambda n: b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n),  # n empty arrays
    ),
    min_size=1,
    max_size=3,
)


def test_random_websocket_messages_never_crash_or_hang_the_server(mock: FalMock) -> None:
    ws_base = mock.base_url.replace("http", "ws", 1) + "/fal/run/"

    @settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 3))
    @given(
        endpoint=st.sampled_from([f"{LCM}/realtime", "fal-ai/socket", "fal-ai/nothing/realtime"]),
        messages=WS_MESSAGES,
    )
    def run(endpoint: str, messages: list[object]) -> None:
        with connect(ws_base + endpoint, open_timeout=TIMEOUT, close_timeout=1) as ws:
            if endpoint == "fal-ai/nothing/realtime":  # told why, then closed
                assert json.loads(ws.recv(WS_TIMEOUT))["error"] == "no_fixture_match"
                with pytest.raises(ConnectionClosed):
                    ws.recv(WS_TIMEOUT)
                return
            for message in messages:
                ws.send(message)  # type: ignore[arg-type]
                if endpoint == "fal-ai/socket":
                    assert ws.recv(WS_TIMEOUT) == message
                    assert ws.recv(WS_TIMEOUT) == message
                else:
                    answer = ws.recv(WS_TIMEOUT)  # a result or an x-fal-error, never silence
                    if isinstance(answer, str):
                        assert json.loads(answer)["type"] == "x-fal-error"

    run()
    assert mock._server.internal_errors == []
    cycle_works(mock.port)
