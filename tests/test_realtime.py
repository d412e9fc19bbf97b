"""Realtime and WebSocket apps with the real ``fal_client``: ``realtime``, ``realtime_async``,
``ws_connect`` (the Node client is in test_js_client.py), plus the wire and the teardown."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from typing import Any, Awaitable, Callable

import fal_client
import msgpack
import pytest
from fal_client.client import RealtimeError
from httpclient import http
from inner_runs import QUIET
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect

from pytest_falmock import FalMock, FixtureFileError
from pytest_falmock._fixture_files import parse_document

LCM = "fal-ai/fast-lcm-diffusion"
IMAGE = {"images": [{"url": "https://x/lcm.jpeg", "content_type": "image/jpeg"}], "seed": 7}
REDACTED = "[REDACTED]"
IN_1 = '{"i": 1}'


def routes(mock: FalMock) -> list[tuple[str, str | None, int]]:
    return [(r.method, r.route, r.status_code) for r in mock.requests]


# -- fal_client.realtime (sync) ---------------------------------------------------------------
def test_several_messages_get_the_same_dict_and_the_journal_has_each(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, IMAGE)

    with fal_client.realtime(LCM, max_buffering=5) as conn:
        results = []
        for prompt in ("a cat", "a dog", "a fox"):
            conn.send({"prompt": prompt, "seed": 1})
            results.append(conn.recv())

    assert results == [IMAGE] * 3
    assert routes(fal_mock) == [
        ("POST", "realtime.token", 200),
        ("GET", "realtime.connect", 101),
        ("WS", "realtime.message", 200),
        ("WS", "realtime.message", 200),
        ("WS", "realtime.message", 200),
    ]
    token, connection, *messages = fal_mock.requests
    assert token.path == "/fal/rest/tokens/"
    assert token.input == {"allowed_apps": ["fast-lcm-diffusion"], "token_expiration": 120}
    assert (connection.path, connection.model) == (f"/fal/run/{LCM}/realtime", LCM)
    assert connection.query == {"fal_jwt_token": REDACTED, "max_buffering": "5"}
    assert [m.input for m in messages] == [{"prompt": p, "seed": 1} for p in ("a cat", "a dog", "a fox")]
    assert {m.request_id for m in messages} == {connection.request_id}
    assert {(m.path, m.model) for m in messages} == {(connection.path, LCM)}
    fal_mock.assert_called(LCM, times=3)


def test_the_realtime_token_never_reaches_the_journal(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, IMAGE)
    issued = http("POST", fal_mock.url + "/rest/tokens/", {"allowed_apps": ["x"], "token_expiration": 120})
    assert issued.status == 200
    assert issued.headers["Content-Type"] == "application/json"
    token = issued.json  # a bare JSON string, as fal answers
    assert isinstance(token, str)
    assert len(token) > 20

    url = f"{fal_mock.base_url.replace('http', 'ws', 1)}/fal/run/{LCM}/realtime?fal_jwt_token={token}"
    with connect(url) as ws:
        ws.send(msgpack.packb({"prompt": token}))
        assert msgpack.unpackb(ws.recv()) == IMAGE

    connection = fal_mock.requests[1]
    assert connection.query == {"fal_jwt_token": REDACTED}
    assert token not in repr([(r, dict(r.query), dict(r.headers)) for r in fal_mock.requests[1:2]])


def test_a_list_reply_answers_each_message_in_order_on_each_connection(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, IMAGE)  # older: serves once the list is used up
    fal_mock.on_realtime(LCM, [{"step": 1}, {"step": 2}])

    for _ in range(2):
        with fal_client.realtime(LCM) as conn:
            answers = []
            for i in range(3):
                conn.send({"i": i})
                answers.append(conn.recv())
            assert answers == [{"step": 1}, {"step": 2}, IMAGE]


@pytest.mark.fal_mock(allow_unmatched=True)
def test_a_used_up_list_is_an_x_fal_error_and_the_message_is_unmatched(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, [{"step": 1}])

    with fal_client.realtime(LCM) as conn:
        conn.send({"i": 0})
        assert conn.recv() == {"step": 1}
        conn.send({"i": 1})
        with pytest.raises(RealtimeError) as excinfo:
            conn.recv()
        with pytest.raises(
            RealtimeError, match=r"CONNECTION_CLOSED.*1008 \(policy violation\) fal_mock: no fixture"
        ):
            conn.recv()  # then the mock closes the connection

    assert excinfo.value.error == "no_fixture_match"
    assert excinfo.value.reason == f"fal_mock: no fixture matches model '{LCM}' (realtime message {IN_1})"
    (unmatched,) = fal_mock.unmatched
    assert (unmatched.method, unmatched.route, unmatched.model, unmatched.input) == (
        "WS",
        "realtime.message",
        LCM,
        {"i": 1},
    )
    assert [reason for _, reason in unmatched.reasons] == [
        "reply list used up on this connection (answered 1 of 1 messages)"
    ]
    assert [r.status_code for r in fal_mock.requests if r.route == "realtime.message"] == [200, 404]


def test_a_callable_reply_sends_several_results_or_none(fal_mock: FalMock) -> None:
    seen: list[Any] = []

    def reply(message: dict[str, Any]) -> Any:
        seen.append(message)
        if message.get("skip"):
            return None
        return [{"frame": i, "prompt": message["prompt"]} for i in range(message["frames"])]

    fal_mock.on_realtime(LCM, reply)
    with fal_client.realtime(LCM) as conn:
        conn.send({"skip": True})  # answered with nothing: the next result is the next message's
        conn.send({"prompt": "a cat", "frames": 3, "image": b"\x89PNG\r\n"})
        received = [conn.recv() for _ in range(3)]

    assert received == [{"frame": i, "prompt": "a cat"} for i in range(3)]
    assert seen == [{"skip": True}, {"prompt": "a cat", "frames": 3, "image": b"\x89PNG\r\n"}]
    assert fal_mock.requests[-1].input["image"] == b"\x89PNG\r\n"  # msgpack binary stays bytes


def test_times_and_match_input_pick_the_answer_per_message(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, {"default": True})
    fal_mock.on_realtime(LCM, {"fast": True}, match_input={"mode": "fast"})
    fal_mock.on_realtime(LCM, {"first": True}, times=1)

    with fal_client.realtime(LCM) as conn:
        answers = []
        for mode in ("slow", "fast", "slow"):
            conn.send({"mode": mode})
            answers.append(conn.recv())

    assert answers == [{"first": True}, {"fast": True}, {"default": True}]


def test_on_realtime_error_raises_realtime_error_and_keeps_the_connection(fal_mock: FalMock) -> None:
    fal_mock.on_realtime_error(LCM, "INVALID_INPUT", "prompt must not be empty")

    with fal_client.realtime(LCM) as conn:
        for _ in range(2):
            conn.send({"prompt": ""})
            with pytest.raises(RealtimeError, match=r"^INVALID_INPUT: prompt must not be empty$") as excinfo:
                conn.recv()
            assert excinfo.value.error == "INVALID_INPUT"
            assert excinfo.value.reason == "prompt must not be empty"

    assert [r.status_code for r in fal_mock.requests if r.route == "realtime.message"] == [400, 400]


def test_use_jwt_false_sends_the_key_on_the_handshake_and_asks_no_token(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, IMAGE)

    with fal_client.realtime(LCM, use_jwt=False) as conn:
        conn.send({"prompt": "a cat"})
        assert conn.recv() == IMAGE

    assert routes(fal_mock) == [("GET", "realtime.connect", 101), ("WS", "realtime.message", 200)]
    connection = fal_mock.requests[0]
    assert connection.query == {}
    assert connection.headers["Authorization"] == REDACTED


def test_a_websocket_app_gets_raw_text_and_binary_frames(fal_mock: FalMock) -> None:
    frames: list[Any] = []

    def handler(frame: str | bytes) -> Any:
        frames.append(frame)
        if isinstance(frame, bytes):
            return [frame[::-1], f"{len(frame)} bytes"]
        return None if frame == "quiet" else frame.upper()

    fal_mock.on_websocket("fal-ai/echo", handler, path="/ws")
    with fal_client.ws_connect("fal-ai/echo", path="/ws") as ws:
        ws.send("quiet")
        ws.send("hello")
        assert ws.recv() == "HELLO"
        ws.send(b"\x00\x01\x02")
        assert (ws.recv(), ws.recv()) == (b"\x02\x01\x00", "3 bytes")

    assert frames == ["quiet", "hello", b"\x00\x01\x02"]
    connection, *messages = fal_mock.requests[1:]
    assert (connection.path, connection.route) == ("/fal/run/fal-ai/echo/ws", "realtime.connect")
    assert connection.model == "fal-ai/echo"
    assert [(m.route, m.model, m.input) for m in messages] == [
        ("realtime.message", "fal-ai/echo", frame) for frame in frames
    ]


def test_ws_connect_without_a_path_reaches_the_app_root(fal_mock: FalMock) -> None:
    fal_mock.on_websocket("fal-ai/echo", lambda frame: frame)
    with fal_client.ws_connect("fal-ai/echo", use_jwt=False) as ws:
        ws.send("ping")
        assert ws.recv() == "ping"
    assert fal_mock.requests[0].path == "/fal/run/fal-ai/echo"


# -- fal_client.realtime_async ------------------------------------------------------------------
Scenario = Callable[[FalMock], Awaitable[None]]


async def realtime_async(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, lambda message: {"echo": message["prompt"]})
    fal_mock.on_realtime(LCM, [{"step": 1}, {"step": 2}], match_input={"list": True})
    fal_mock.on_realtime_error(re.compile("broken"), "BOOM", "try again")

    async with fal_client.realtime_async(LCM) as conn:
        received = []
        for prompt in ("a", "b"):
            await conn.send({"prompt": prompt})
            received.append(await conn.recv())
        for _ in range(2):
            await conn.send({"list": True})
            received.append(await conn.recv())
    assert received == [{"echo": "a"}, {"echo": "b"}, {"step": 1}, {"step": 2}]

    async with fal_client.realtime_async("fal-ai/broken") as conn:
        await conn.send({"prompt": "x"})
        with pytest.raises(RealtimeError, match=r"^BOOM: try again$"):
            await conn.recv()
    messages = [r for r in fal_mock.requests if r.route == "realtime.message"]
    assert [(m.model, m.status_code) for m in messages] == [(LCM, 200)] * 4 + [("fal-ai/broken", 400)]


@pytest.mark.asyncio
async def test_realtime_async(fal_mock: FalMock) -> None:
    await realtime_async(fal_mock)


def test_realtime_async_asyncio_run(fal_mock: FalMock) -> None:
    asyncio.run(realtime_async(fal_mock))


# -- teardown ------------------------------------------------------------------------------------
def test_an_unmatched_connection_fails_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import fal_client, pytest
        from fal_client.client import RealtimeError

        def test_unmatched(fal_mock):
            fal_mock.on_realtime("fal-ai/other", {{"ok": 1}})
            with fal_client.realtime("{LCM}") as conn:
                with pytest.raises(RealtimeError) as excinfo:
                    conn.recv()
            assert excinfo.value.error == "no_fixture_match"
            assert "{LCM}" in excinfo.value.reason

        def test_next_test_is_clean(fal_mock):
            assert fal_mock.unmatched == []
        """
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "fal_mock: 1 request matched no registered fixture:",
            "",
            f"- GET /fal/run/{LCM}/realtime (route realtime.connect, model '{LCM}')",
            "  input: null",
            "  registered fixtures:",
            "    * on_realtime('fal-ai/other') at test_an_unmatched_connection_fails_the_test_at_teardown.py"
            ":*"
            f": endpoint 'fal-ai/other/realtime' != '{LCM}/realtime'",
            "",
            "If these requests are expected, register a fixture for them, or mark the test with "
            "@pytest.mark.fal_mock(allow_unmatched=True).",
        ],
        consecutive=True,
    )


def test_an_unmatched_message_and_a_failing_reply_fail_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import fal_client, pytest
        from fal_client.client import RealtimeError

        def reply(message):
            raise ValueError("no model loaded")

        def test_it(fal_mock):
            fal_mock.on_realtime("{LCM}", reply, match_input={{"prompt": "cat"}})
            fal_mock.on_run("{LCM}", {{"ok": 1}})
            with fal_client.realtime("{LCM}") as conn:
                conn.send({{"prompt": "cat"}})
                with pytest.raises(RealtimeError, match="^handler_error: fal_mock: on_realtime"):
                    conn.recv()
                conn.send({{"prompt": "dog"}})
                with pytest.raises(RealtimeError, match="^no_fixture_match: "):
                    conn.recv()
        """
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "fal_mock: 1 request matched no registered fixture:",
            "",
            f"- WS /fal/run/{LCM}/realtime (route realtime.message, model '{LCM}')",
            '  input: {"prompt": "dog"}',
            "  registered fixtures:",
            f"    * on_run('{LCM}') at *: not a WebSocket fixture "
            "(register one with on_realtime() or on_websocket())",
            f"    * on_realtime('{LCM}') at *: input "
            '{"prompt": "dog"} does not contain {"prompt": "cat"}',
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "fal_mock: 1 call of this test's realtime reply callables or WebSocket handlers failed "
            "(the client got an x-fal-error):",
            "",
            f'- on_realtime(\'{LCM}\') at *, for the message {{"prompt": "cat"}}:',
            "Traceback (most recent call last):",
            "*ValueError: no model loaded",
        ]
    )


def test_an_http_request_for_a_realtime_model_says_why_it_did_not_match(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, IMAGE)
    fal_mock.configure(allow_unmatched=True)
    assert http("POST", f"{fal_mock.url}/run/{LCM}", {"prompt": "x"}).status == 404
    (unmatched,) = fal_mock.unmatched
    assert [reason for _, reason in unmatched.reasons] == [
        "realtime fixture (WebSocket), request is a run request"
    ]


# -- connections end with the test, and with the server -------------------------------------------
def ws_url(mock: FalMock, endpoint: str) -> str:
    return f"{mock.base_url.replace('http', 'ws', 1)}/fal/run/{endpoint}"


def test_reset_and_stop_close_live_connections_and_leave_no_thread() -> None:
    before = set(threading.enumerate())
    mock = FalMock().start()
    mock.on_realtime(LCM, IMAGE)
    with connect(ws_url(mock, f"{LCM}/realtime")) as left_open:
        left_open.send(msgpack.packb({"prompt": "a"}))
        assert msgpack.unpackb(left_open.recv()) == IMAGE

        mock.reset()  # the next test begins: the previous one's connection is closed (1001)
        with pytest.raises(ConnectionClosed) as closed:
            left_open.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "fal_mock reset: the test ended")
        assert mock._server.connection_count == 0
        assert mock.requests == []

    mock.on_realtime(LCM, IMAGE)
    with connect(ws_url(mock, f"{LCM}/realtime")) as until_stop:
        until_stop.send(msgpack.packb({"prompt": "b"}))
        assert msgpack.unpackb(until_stop.recv()) == IMAGE
        mock.stop()
        with pytest.raises(ConnectionClosed) as closed:
            until_stop.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "fal_mock stopped")
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert [t.name for t in left if t.name.startswith("fal_mock")] == []  # the client's may linger


HANDSHAKE = (
    "GET /fal/run/{endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_peer_that_never_answers_the_close_is_cut_off_by_reset() -> None:
    with FalMock() as mock:
        mock.on_websocket("fal-ai/echo", lambda frame: frame)
        with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
            sock.sendall(HANDSHAKE.format(endpoint="fal-ai/echo").encode())
            head = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
            assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
            assert head.count(b"\r\nServer: ") == 1
            assert b"\r\nServer: fal_mock\r\n" in head
            assert b"\r\nx-fal-request-id: " in head  # the connection's id, as journaled
            assert mock._server.connection_count == 1
            mock.reset()  # sends a close frame, waits a moment, then cuts the socket
            assert mock._server.connection_count == 0
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert data.startswith(b"\x88")  # the close frame came first


def test_an_invalid_handshake_is_refused_and_not_journaled(fal_mock: FalMock) -> None:
    fal_mock.on_websocket("fal-ai/echo", lambda frame: frame)
    with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) as sock:
        sock.sendall(HANDSHAKE.format(endpoint="fal-ai/echo").replace("Version: 13", "Version: 8").encode())
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert head.endswith(b"Failed to open a WebSocket connection: invalid Sec-WebSocket-Version header: 8.\n")
    assert fal_mock.requests == []


def test_an_upgrade_on_another_route_is_answered_in_http(fal_mock: FalMock) -> None:
    with socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) as sock:
        sock.sendall(HANDSHAKE.format(endpoint="x").replace("/fal/run/x", "/fal/queue/fal-ai/x").encode())
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nConnection: close\r\n" in head
    assert [(r.route, r.status_code) for r in fal_mock.requests] == [("queue.submit", 405)]


def test_the_token_route_takes_post_only(fal_mock: FalMock) -> None:
    answer = http("GET", f"{fal_mock.url}/rest/tokens/")
    assert (answer.status, answer.headers["Allow"]) == (405, "POST, OPTIONS")


def test_bad_messages_get_an_error_or_close_the_connection() -> None:
    with FalMock(max_body=1024) as mock:
        mock.on_realtime(LCM, IMAGE)
        with connect(ws_url(mock, f"{LCM}/realtime")) as ws:
            ws.send(b"\xc1")  # never used in msgpack
            error = json.loads(ws.recv())
            assert error == {
                "type": "x-fal-error",
                "error": "invalid_message",
                "reason": "fal_mock: the message is not valid msgpack: FormatError",
            }
            ws.send(json.dumps({"prompt": "as text"}))  # a text message is read as JSON
            assert msgpack.unpackb(ws.recv()) == IMAGE
            ws.send(b"x" * 2048)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
            assert closed.value.rcvd.code == 1009
        inputs = [r.input for r in mock.requests if r.route == "realtime.message"]
        assert inputs == [None, {"prompt": "as text"}]


# -- many connections at once ---------------------------------------------------------------------
def test_eight_connections_of_a_hundred_messages_lose_and_cross_nothing(fal_mock: FalMock) -> None:
    fal_mock.on_realtime(LCM, lambda message: {"conn": message["conn"], "i": message["i"]})
    failures: list[BaseException] = []
    received: dict[int, list[Any]] = {}

    def client(conn_no: int) -> None:
        try:
            with fal_client.realtime(LCM) as conn:
                got = received.setdefault(conn_no, [])
                for i in range(100):
                    conn.send({"conn": conn_no, "i": i})
                    got.append(conn.recv())
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert failures == []
    assert received == {n: [{"conn": n, "i": i} for i in range(100)] for n in range(8)}
    messages = [r for r in fal_mock.requests if r.route == "realtime.message"]
    by_connection: dict[str | None, list[Any]] = {}
    for message in messages:
        by_connection.setdefault(message.request_id, []).append(message.input)
    assert len(by_connection) == 8
    assert sorted(inputs[0]["conn"] for inputs in by_connection.values()) == list(range(8))
    for inputs in by_connection.values():
        assert inputs == [{"conn": inputs[0]["conn"], "i": i} for i in range(100)]


# -- fixture files, the control API, registration errors ----------------------------------------
REALTIME_DOC = {
    "fixtures": [
        {  # file entries are tried in order
            "match": {"model": LCM, "route": "realtime", "input": {"steps": 2}},
            "response": {"messages": [{"step": 1}, {"step": 2}]},
        },
        {"match": {"model": LCM, "route": "realtime"}, "response": {"json": IMAGE}},
        {
            "match": {"model_regex": "^fal-ai/broken", "route": "realtime"},
            "response": {"error": "OUT_OF_MEMORY", "reason": "try a smaller image"},
            "times": 1,
        },
    ]
}


def exchange(mock: FalMock, endpoint: str, *messages: Any) -> list[Any]:
    """Send each message on one realtime connection; what each one got back (decoded)."""
    answers: list[Any] = []
    with connect(ws_url(mock, f"{endpoint}/realtime")) as ws:
        for message in messages:
            ws.send(msgpack.packb(message))
            answer = ws.recv()
            answers.append(json.loads(answer) if isinstance(answer, str) else msgpack.unpackb(answer))
    return answers


def test_fixture_documents_and_the_control_api_take_realtime_entries() -> None:
    with FalMock() as mock:
        added = http("POST", f"{mock.base_url}/__falmock/fixtures", REALTIME_DOC)
        assert (added.status, added.json) == (201, {"added": 3})

        assert exchange(mock, LCM, {"steps": 2}, {"steps": 2}, {"steps": 2, "image": b"\x01\x02"}) == [
            {"step": 1},
            {"step": 2},
            IMAGE,  # the list is used up on this connection: the next entry serves
        ]
        assert exchange(mock, "fal-ai/broken-model", {"prompt": "x"}) == [
            {"type": "x-fal-error", "error": "OUT_OF_MEMORY", "reason": "try a smaller image"}
        ]
        journal = http("GET", f"{mock.base_url}/__falmock/requests").json
        assert [(r["method"], r["route"], r["status_code"]) for r in journal] == [
            ("GET", "realtime.connect", 101),
            *[("WS", "realtime.message", 200)] * 3,
            ("GET", "realtime.connect", 101),
            ("WS", "realtime.message", 400),
        ]
        assert journal[3]["input"] == {"steps": 2, "image": "data:application/octet-stream;base64,AQI="}


@pytest.mark.parametrize(
    ("response", "extra", "message"),
    [
        (
            {"json": {}, "messages": [{}]},
            {},
            'response: a realtime entry needs exactly one of "json", "messages"',
        ),
        ({"json": [1]}, {}, "response: json: expected an object, got [1]"),
        ({"messages": []}, {}, "response: messages: expected a non-empty list of objects, got []"),
        ({"messages": [{}, 2]}, {}, "response: messages: expected a non-empty list of objects, got [{}, 2]"),
        ({"error": ""}, {}, "response: error must be a non-empty string, got ''"),
        ({"json": {}, "reason": "x"}, {}, 'response.reason: goes with "error"'),
        (
            {"json": {}, "status": 500},
            {},
            "response: unknown key 'status' (allowed: error, json, messages, reason)",
        ),
        ({"json": {}}, {"latency": 1}, "latency: does not apply to realtime entries"),
        ({"json": {}}, {"times": 0}, "times: expected a positive integer, got 0"),
    ],
)
def test_bad_realtime_entries_name_the_entry(response: Any, extra: Any, message: str) -> None:
    document = {"fixtures": [{"match": {"model": LCM, "route": "realtime"}, "response": response, **extra}]}
    with pytest.raises(FixtureFileError) as excinfo:
        parse_document(document, "rt.json")
    assert str(excinfo.value).startswith(f"fal fixture file rt.json: fixtures[0].{message}")


def test_registration_errors_name_the_helper() -> None:
    mock = FalMock()
    with pytest.raises(TypeError, match=r"^fal_mock\.on_realtime\(\): reply must be a dict, a list of dicts"):
        mock.on_realtime(LCM, "hello")
    with pytest.raises(ValueError, match=r"^fal_mock\.on_realtime\(\): the reply list is empty"):
        mock.on_realtime(LCM, [])
    with pytest.raises(TypeError, match=r"^fal_mock\.on_realtime\(\) reply\[1\]: a realtime result must be"):
        mock.on_realtime(LCM, [{}, "x"])
    with pytest.raises(TypeError, match=r"^fal_mock\.on_realtime\(\): the result cannot be sent as msgpack"):
        mock.on_realtime(LCM, {"tags": {"a", "b"}})
    with pytest.raises(ValueError, match=r"^fal_mock\.on_realtime\(\): times must be a positive integer"):
        mock.on_realtime(LCM, {}, times=0)
    with pytest.raises(
        TypeError, match=r"^fal_mock\.on_realtime\(\): match_input must be a dict or a callable"
    ):
        mock.on_realtime(LCM, {}, match_input=3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^fal_mock\.on_realtime_error\(\): error must be a non-empty string"
    ):
        mock.on_realtime_error(LCM, "")
    with pytest.raises(TypeError, match=r"^fal_mock\.on_websocket\(\): handler must be a callable"):
        mock.on_websocket(LCM, {"not": "callable"})
    with pytest.raises(TypeError, match=r"^fal_mock\.on_websocket\(\): model must be a str"):
        mock.on_websocket(3, print)  # type: ignore[arg-type]


def test_a_websocket_handler_answering_nonsense_is_reported(fal_mock: FalMock) -> None:
    fal_mock.on_websocket("fal-ai/echo", lambda frame: 42)
    with fal_client.ws_connect("fal-ai/echo") as ws:
        ws.send("hi")
        error = json.loads(ws.recv())
    assert error["error"] == "handler_error"
    assert error["reason"].startswith("fal_mock: on_websocket('fal-ai/echo') at test_realtime.py:")
    (failure,) = fal_mock._stores.handler_errors
    assert "TypeError: answered 42; expected str, bytes, a list of them, or None" in failure
    fal_mock._stores.handler_errors.clear()  # reported; this test expects it


def frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """One client frame (masked), as the websockets library writes it."""
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize(
    ("last", "answer"),
    [
        # the close came in the same read: it is echoed at once, and nothing is sent after it
        (frame(Opcode.CLOSE, b"\x03\xe8"), b"\x88\x02\x03\xe8"),
        (frame(Opcode.TEXT, b"\xff\xfe"), b"\x81\x05hello\x88!\x03\xeftext message is not valid UTF-8"),
    ],
    ids=["then-close", "then-bad-utf8"],  # frames are masked at random: no ids from them
)
def test_frames_sent_with_the_handshake_fragments_and_pings(last: bytes, answer: bytes) -> None:
    with FalMock() as mock:
        seen: list[Any] = []
        mock.on_websocket("fal-ai/echo", lambda message: seen.append(message) or message)
        with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
            frames = (
                frame(Opcode.TEXT, b"hel", fin=False) + frame(Opcode.PING, b"p") + frame(Opcode.CONT, b"lo")
            )
            sock.sendall(HANDSHAKE.format(endpoint="fal-ai/echo").encode() + frames + last)
            head, _, rest = read_all(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert rest == b"\x8a\x01p" + answer  # the pong first: the message was complete only after it
    assert seen == ["hello"]  # after stop(), which joined the connection's thread


def test_an_upgrade_to_another_protocol_is_plain_http(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/x", {"ok": 1})
    answer = http(
        "POST", f"{fal_mock.url}/run/fal-ai/x", {}, headers={"Upgrade": "h2c", "Connection": "Upgrade"}
    )
    assert (answer.status, answer.json) == (200, {"ok": 1})
