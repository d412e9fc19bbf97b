"""Attacks on the ways in that issues 9-13 added, each reproduced over real sockets on 127.0.0.1.

Every browser page can reach the fal routes (``Access-Control-Allow-Origin: *``, and a
``text/plain`` POST or a WebSocket needs no preflight), so each test plays a hostile page or
process: it fills the file store, makes the mock generate files it never handed out, decodes
inputs built to blow up in memory, floods the journal, pushes the clock past any date, fails
other tests through the guard, or reads a file while a reset drops it. Each is bounded in time
and count; nothing asserts a duration.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import msgpack
import pytest
from fake_fal_upstream import FakeFal
from httpclient import http
from pytest_httpserver import HTTPServer
from rawhttp import exchange, read_until_close, request
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pytest_falmock import FalMock, FalMockUsageError, _files, _realtime, _webhooks
from pytest_falmock._clients._guard import Guard
from pytest_falmock._clock import MAX_OFFSET
from pytest_falmock._diagnostics import RequestLog
from pytest_falmock._settings import Settings
from pytest_falmock._storage import Storage
from pytest_falmock._stores import Stores

KiB = 1024
MiB = 1024 * KiB
FLUX = "fal-ai/flux/dev"
LCM = "fal-ai/fast-lcm-diffusion"
JSON_TYPE = [("Content-Type", "application/json")]
JSON_HEADER = dict(JSON_TYPE)
BINARY = [("Content-Type", "application/octet-stream")]
Make = Callable[..., FalMock]


def bounded(**settings: Any) -> FalMock:
    return FalMock(settings=Settings(**settings))


def upload(mock: FalMock, data: bytes) -> Any:
    """A CDN upload as ``fal_client`` (or a page) sends it: the parsed answer."""
    host = [("Host", f"127.0.0.1:{mock.port}")]  # the URLs it answers name the Host it was sent
    (answer,) = exchange(mock.port, request("POST", "/fal/cdn/files/upload", [*host, *BINARY], data))
    return answer


def path_of(url: str) -> str:
    return urlsplit(url).path


# -- the file store: a count and a byte bound ----------------------------------------------------
def test_uploads_past_the_file_bounds_get_507_and_the_next_test_has_room_again() -> None:
    with bounded(max_files=3, max_file_bytes=64 * KiB) as mock:
        assert [upload(mock, b"x" * KiB).status for _ in range(3)] == [200, 200, 200]

        refused = upload(mock, b"y" * KiB)

        assert refused.status == 507
        assert refused.headers["access-control-allow-origin"] == "*"
        assert refused.json == {
            "detail": "fal_mock holds 3 files of 3,072 bytes for this test: a 1,024-byte upload file "
            "would pass its bound of 3 files or 65,536 bytes (Settings.max_files, "
            "Settings.max_file_bytes; uploads, multipart uploads and their parts under way, added "
            "and generated files count, until the next reset)"
        }
        assert len(mock.uploads) == 3
        assert [r.status_code for r in mock.requests][-1] == 507
        mock.reset()
        assert upload(mock, b"z" * 60 * KiB).status == 200
        assert upload(mock, b"z" * 5 * KiB).status == 507  # the bytes this time
        with pytest.raises(FalMockUsageError, match=r"^fal_mock.add_file\(\): fal_mock holds 1 files"):
            mock.add_file(b"p" * 5 * KiB, "image/png")


def test_parts_sent_again_and_again_stay_within_the_bound_and_complete_as_one_file() -> None:
    with bounded(max_files=4, max_file_bytes=10 * KiB) as mock:
        started = http(
            "POST", f"{mock.url}/cdn/files/upload/multipart", raw=b"", headers={"X-Fal-File-Name": "a.bin"}
        )
        base = path_of(started.json["access_url"]) + f"/multipart/{started.json['uploadId']}"
        put = lambda n, data: exchange(mock.port, request("PUT", f"{base}/{n}", BINARY, data))[0]  # noqa: E731
        one, two = put(1, b"1" * 4 * KiB), put(2, b"2" * 4 * KiB)
        for _ in range(20):  # a page re-sending a part keeps replacing it: no growth
            two = put(2, b"2" * 4 * KiB)
        assert (one.status, two.status) == (200, 200)
        assert put(3, b"3" * 4 * KiB).status == 507  # 12 KiB > 10 KiB

        parts = [{"partNumber": 1, "etag": one.json["etag"]}, {"partNumber": 2, "etag": two.json["etag"]}]
        done = http("POST", f"{mock.base_url}{base}/complete", {"parts": parts})

        assert done.status == 200
        assert http("GET", done.json["access_url"]).body == b"1" * 4 * KiB + b"2" * 4 * KiB
        (assembled,) = mock.uploads
        assert assembled.size == 8 * KiB  # counted once, not as parts plus file
        assert upload(mock, b"x" * 2 * KiB).status == 200
        assert upload(mock, b"x").status == 507


def test_starting_multipart_uploads_without_end_is_bounded_too() -> None:
    with bounded(max_files=5) as mock:
        answers = [
            http("POST", f"{mock.url}/rest/storage/upload/initiate-multipart", {"file_name": f"{i}.bin"})
            for i in range(7)
        ]
        assert [a.status for a in answers] == [200] * 5 + [507, 507]


def test_a_refused_put_leaves_its_issued_url_usable() -> None:
    with bounded(max_files=1) as mock:
        url = http("POST", f"{mock.url}/rest/storage/upload/initiate", {"file_name": "a.txt"}).json[
            "upload_url"
        ]
        assert upload(mock, b"fills the store").status == 200
        assert http("PUT", url, raw=b"data").status == 507
        mock.reset()  # the issued URL went with the test, like everything else
        assert http("PUT", url, raw=b"data").status == 404


def test_names_and_content_types_sent_to_be_kept_are_bounded() -> None:
    with FalMock() as mock:
        for _ in range(3):  # each issued URL is remembered until it is used: none holds megabytes
            issued = http(
                "POST",
                f"{mock.url}/rest/storage/upload/initiate",
                {"file_name": "a" * 1_000_000 + ".png", "content_type": "image/" + "x" * 1_000_000},
            )
            assert issued.status == 200
        name = issued.json["upload_url"].rsplit("/", 1)[1]
        assert (len(name), name[-6:]) == (255, "aa.png")
        long_type = {"Content-Type": "image/" + "y" * 300}
        assert http("PUT", issued.json["upload_url"], raw=b"data", headers=long_type).status == 200
        (kept,) = mock.uploads
        assert (kept.file_name, kept.content_type) == (name, "application/octet-stream")


def test_small_files_leave_memory_once_enough_are_held_and_share_one_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_files, "MAX_IN_MEMORY", 2 * KiB)
    with FalMock() as mock:
        sent = [os.urandom(KiB) for _ in range(4)]
        for data in sent:
            assert upload(mock, data).status == 200
        kept = mock.uploads
        assert [u.data for u in kept] == sent
        assert [u._blob.in_memory for u in kept] == [True, True, False, False]
        assert [http("GET", u.url).body for u in kept] == sent
        descriptors = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        for _ in range(200):  # a page sending many small files cannot use up the descriptors
            assert upload(mock, b"s" * KiB).status == 200
        if descriptors is not None:
            assert len(os.listdir("/proc/self/fd")) <= descriptors + 2
        mock.reset()
        assert upload(mock, b"after").status == 200  # a fresh arena for the next test


def test_a_part_sent_again_into_the_arena_stays_counted_until_the_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_files, "MAX_IN_MEMORY", 0)  # every small file goes to the arena
    with bounded(max_file_bytes=10 * KiB) as mock:
        started = http("POST", f"{mock.url}/rest/storage/upload/initiate-multipart", {"file_name": "a.bin"})
        part = f"{started.json['upload_url']}/1"
        statuses = [http("PUT", part, raw=b"p" * 3 * KiB).status for _ in range(4)]
        assert statuses == [200, 200, 200, 507]  # the arena never shrinks, so neither does the count
        mock.reset()
        assert upload(mock, b"x" * 9 * KiB).status == 200


# -- generated media: only what a stub hands out, made once ------------------------------------------
def test_generated_files_are_made_only_for_urls_a_stub_hands_out_and_only_once() -> None:
    with FalMock() as mock:
        mock.on_image(FLUX, {"images": [{"width": 64, "height": 32, "content_type": "image/jpeg"}]})
        made_up = [
            "64x32/other.jpg",
            "4096x4096/x0.jpg",
            "video/x.mp4",
            "9" * 5000 + "x1/a.png",
            "%EF%BC%91x1/a.png",  # a full-width digit,
        ]
        for path in made_up:
            (answer,) = exchange(mock.port, request("GET", f"/fal/files/generated/{path}"))
            assert answer.status == 404, path
        assert mock.files == []

        url = http("POST", f"{mock.url}/run/{FLUX}", {}).json["images"][0]["url"]
        bodies = [http("GET", url).body for _ in range(5)]

        assert bodies[0][:2] == b"\xff\xd8"
        assert bodies.count(bodies[0]) == 5
        assert [(f.url, f.source) for f in mock.files] == [(url, "generated")]
        assert mock._server.internal_errors == []


def test_generated_files_count_against_the_bound() -> None:
    with bounded(max_files=1) as mock:
        mock.on_image(FLUX, {"images": [{"width": 8, "height": 8}, {"width": 9, "height": 9}]})
        first, second = (i["url"] for i in http("POST", f"{mock.url}/run/{FLUX}", {}).json["images"])
        assert http("GET", first).status == 200
        refused = http("GET", second)
        assert refused.status == 507
        assert "would pass its bound of 1 files" in refused.json["detail"]
        assert http("GET", first).status == 200  # what is held is still served


# -- decoded inputs: a size limit, and a journal that holds a bounded amount -------------------------
def test_a_json_input_over_max_input_is_refused_before_it_is_decoded() -> None:
    with bounded(max_input=KiB) as mock:
        mock.on_run(FLUX, {"ok": 1})
        body = json.dumps({"prompt": "p" * 2 * KiB}).encode()

        (answer,) = exchange(mock.port, request("POST", f"/fal/run/{FLUX}", JSON_TYPE, body))

        assert answer.status == 413
        assert answer.json == {
            "detail": f"JSON input of {len(body)} bytes exceeds the 1024-byte limit (Settings.max_input): "
            "send large data as a file (upload it, pass its URL)"
        }
        (record,) = mock.requests
        assert (record.route, record.model, record.status_code, record.input) == ("run", FLUX, 413, None)
        assert upload(mock, b"x" * 2 * KiB).status == 200  # files are not inputs: max_body applies


def test_inputs_made_to_blow_up_when_decoded_cannot_fill_the_journal() -> None:
    bomb = b"[" + b"{}," * 7000 + b"{}]"  # 21 KB of JSON, about 0.5 MB of Python objects
    with bounded(max_journal_bytes=2 * MiB) as mock:
        for i in range(20):
            exchange(
                mock.port,
                request("POST", f"/fal/run/fal-ai/none-{i}", [("Content-Type", "text/plain")], bomb),
            )

        kept = mock.requests
        assert 1 <= len(kept) < 10  # the newest ones, within the budget
        assert kept[-1].model == "fal-ai/none-19"
        assert [u.model for u in mock.unmatched] == [f"fal-ai/none-{i}" for i in range(len(mock.unmatched))]
        assert len(mock.unmatched) < 10
        assert f"... and {20 - len(mock.unmatched)} more, not kept" in mock.problems()


def test_a_websocket_message_over_max_input_closes_the_connection_with_1009() -> None:
    with bounded(max_input=KiB) as mock:
        mock.on_realtime(LCM, {"ok": 1})
        with connect(f"{mock.base_url.replace('http', 'ws', 1)}/fal/run/{LCM}/realtime") as ws:
            ws.send(b"x" * 2 * KiB)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


def test_a_realtime_message_built_to_blow_up_is_refused_and_the_connection_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_realtime, "MAX_VALUES", 1000)
    nested = b"\xdd" + struct.pack(">I", 1001) + b"\x90" * 1001  # an array of 1,001 empty arrays
    flat = msgpack.packb(list(range(2000)))
    with FalMock() as mock:
        mock.on_realtime(LCM, {"ok": 1})
        with connect(f"{mock.base_url.replace('http', 'ws', 1)}/fal/run/{LCM}/realtime") as ws:
            for message in (nested, flat, json.dumps([[]] * 1001)):
                ws.send(message)
                assert json.loads(ws.recv()) == {
                    "type": "x-fal-error",
                    "error": "invalid_message",
                    "reason": "fal_mock: the message holds more than 1,000 values (objects, arrays, items)",
                }
            ws.send(msgpack.packb({"prompt": "still here"}))
            assert msgpack.unpackb(ws.recv()) == {"ok": 1}
        inputs = [r.input for r in mock.requests if r.route == "realtime.message"]
        assert inputs == [None, None, None, {"prompt": "still here"}]


# -- the clock ---------------------------------------------------------------------------------------
def test_the_clock_cannot_be_pushed_past_any_date() -> None:
    with FalMock() as mock:
        mock.on_queue(FLUX, {"ok": 1})
        control = f"{mock.base_url}/__falmock/advance"

        refused = http("POST", control, {"seconds": 1e308})
        assert refused.status == 400
        assert "runs at most 3,153,600,000 s (100 years) ahead of the wall clock" in refused.json["detail"]
        past_floats = http("POST", control, raw=b'{"seconds": 1' + b"0" * 400 + b"}", headers=JSON_HEADER)
        assert past_floats.status == 400  # JSON ints have no limit: float() of this one overflows
        assert "seconds must be a finite, non-negative number" in past_floats.json["detail"]
        endless = {
            "fixtures": [{"match": {"model": "fal-ai/slow"}, "response": {"json": {}}, "latency": 10**400}]
        }
        answer = http("POST", f"{mock.base_url}/__falmock/fixtures", endless)
        assert answer.status == 400
        assert "latency" in answer.json["detail"]
        assert "at most 31,536,000" in answer.json["detail"]
        assert http("POST", control, {"seconds": MAX_OFFSET - 10}).status == 200
        assert http("POST", control, {"seconds": 20}).status == 400
        with pytest.raises(ValueError, match="at most 3,153,600,000 s"):
            mock.advance(11)
        mock.clock.advance(1e308)  # a client's own absurd wait (virtual time) stops at the bound too
        assert mock.clock.offset == MAX_OFFSET

        envelope = http("POST", f"{mock.url}/queue/{FLUX}?logs=1", {})
        status = http("GET", envelope.json["status_url"] + "?logs=1")
        assert (envelope.status, status.status) == (200, 200)
        assert status.json["logs"][0]["timestamp"].startswith("21")  # a date, a century ahead
        assert mock._server.internal_errors == []
        mock.reset()  # the next test starts on the wall clock: nothing of this one shows
        assert mock.clock.offset == 0
        assert http("POST", control, {"seconds": 60}).json == {"advanced": 60.0, "offset": 60.0}


# -- what reaches the developer's terminal ----------------------------------------------------------
def test_escape_sequences_in_a_path_never_reach_the_terminal() -> None:
    """A page can send ``<img src=".../fal/run/%1b]52;c;...%07">``: the path is decoded before it is
    logged (``fal-mock``'s stderr) and reported (pytest's teardown failure)."""
    log = io.StringIO()
    with FalMock() as mock:
        mock.add_request_listener(RequestLog(log))
        hostile = "/fal/run/x/%1b%5b2J%1b]52;c;ZXZpbA==%07%c2%9b"
        (answer,) = exchange(mock.port, request("GET", hostile, [("Sec-Fetch-Site", "cross-site")]))
        assert answer.status == 404
        report = mock.problems()
        (request_made,) = mock.requests
        shown = [log.getvalue(), report, str(request_made)]
    for text in shown:
        assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in text), text
        assert "/fal/run/x/\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07\\x9b" in text


# -- reports of failures: bounded ---------------------------------------------------------------------
def test_a_flood_of_failing_realtime_callbacks_keeps_a_bounded_report() -> None:
    def reply(message: Any) -> Any:
        raise RuntimeError("the test's callable fails")

    with FalMock() as mock:
        mock.on_realtime(LCM, reply)
        with connect(f"{mock.base_url.replace('http', 'ws', 1)}/fal/run/{LCM}/realtime") as ws:
            for i in range(105):
                ws.send(msgpack.packb({"i": i}))
                assert json.loads(ws.recv())["error"] == "handler_error"
        report = mock.problems()
        assert report.startswith("fal_mock: 105 calls of this test's realtime reply callables")
        assert report.count("RuntimeError: the test's callable fails") == 100
        assert report.endswith("... and 5 more, not kept (the first 100 are).")


def test_internal_errors_are_reported_but_kept_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Storage, op: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Storage, "_token", boom)
    with FalMock() as mock:
        statuses = [http("POST", f"{mock.url}/rest/storage/auth/token", {}).status for _ in range(25)]
        assert statuses == [500] * 25
        assert len(mock._server.internal_errors) == 20
        assert mock.problems().endswith("RuntimeError: a bug\n\n... and 5 more, not kept")
        mock.reset()
        assert mock.problems() == ""


# -- webhooks: deliveries under way are bounded --------------------------------------------------------
def test_webhooks_to_a_receiver_that_never_answers_cannot_pile_up_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_webhooks, "MAX_IN_FLIGHT", 2)
    monkeypatch.setattr(_webhooks, "DELIVERY_TIMEOUT", 1.0)
    with socket.socket() as hole, FalMock() as mock:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # connections are queued, never accepted, never answered
        hook = f"http://127.0.0.1:{hole.getsockname()[1]}/hook"
        mock.on_queue(FLUX, {"ok": 1})
        for _ in range(4):
            assert http("POST", f"{mock.url}/queue/{FLUX}?fal_webhook={hook}", {}).status == 200

        deliveries = mock.webhooks

        errors = sorted(d.error or "" for d in deliveries)
        assert [d.outcome for d in deliveries] == ["failed"] * 4
        assert errors[:2] == ["2 webhook deliveries were under way already; this one was not sent"] * 2
        assert all(e.startswith("TimeoutError") for e in errors[2:])  # only two were ever started


def test_a_page_on_another_site_cannot_make_the_mock_post_to_local_services(receiver: HTTPServer) -> None:
    """A page can POST ``text/plain`` to 127.0.0.1 itself, but not JSON: a webhook would do it
    for the page, to any local port and path it picks."""
    hook = receiver.url_for("/hook")
    with FalMock() as mock:
        mock.on_queue(FLUX, {"ok": 1})
        pages = [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}]
        for headers in [*pages, {"Origin": "http://localhost:3000"}]:  # a page on this machine may
            page = {**headers, "Content-Type": "text/plain"}
            assert (
                http("POST", f"{mock.url}/queue/{FLUX}?fal_webhook={hook}", raw=b"{}", headers=page).status
                == 200
            )

        deliveries = mock.webhooks

    assert [d.outcome for d in deliveries] == ["blocked", "blocked", "delivered"]
    assert deliveries[0].error == (
        "asked for by the web page at Origin 'https://evil.example': "
        "fal_mock sends no request for another site"
    )
    assert len(receiver.log) == 1


# -- the guard: a page cannot fail the tests -----------------------------------------------------------
@pytest.fixture
def guard() -> Iterator[Guard]:
    guard = Guard()
    guard.base_url()  # starts its server (nothing is redirected: arm() is not called)
    yield guard
    guard.disarm()


@pytest.mark.parametrize(
    "headers",
    [
        [("Origin", "https://evil.example")],
        [("Sec-Fetch-Site", "cross-site")],
        [("Host", "rebind.evil.example")],
    ],
    ids=["origin", "no-cors", "dns-rebinding"],
)
def test_a_page_that_finds_the_guard_is_refused_without_failing_a_test(
    guard: Guard, headers: list[tuple[str, str]]
) -> None:
    port = int(guard.base_url().rsplit(":", 1)[1])
    page = request("POST", f"/fal/run/{FLUX}", [*headers, ("Content-Type", "text/plain")], b"{}")

    (answer,) = exchange(port, page)

    assert answer.status == 403
    assert "is not a fal call of this test run" in answer.json["detail"]
    assert "access-control-allow-origin" not in answer.headers
    assert not guard.pending
    (real,) = exchange(port, request("POST", f"/fal/run/{FLUX}", JSON_TYPE, b"{}"))  # the test process
    assert (real.status, guard.pending) == (403, True)


# -- a download under way when the test ends -------------------------------------------------------------
def test_a_download_cut_short_by_a_reset_ends_quietly_and_fails_no_later_test() -> None:
    data = os.urandom(MiB) * 24  # spooled to a temporary file
    with FalMock() as mock:
        url = upload(mock, data).json["access_url"]
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the server blocks on the send
            sock.settimeout(10)
            sock.connect(("127.0.0.1", mock.port))
            sock.sendall(request("GET", path_of(url)))
            first = b""
            while len(first) < 64 * KiB:  # the download is under way (its head and a first piece)
                first += sock.recv(65536)
            mock.reset()  # the next test starts: the file is dropped mid-download
            received = first + read_until_close(sock)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Length: 25165824" in head
        assert 0 < len(body) < len(data)
        assert data.startswith(body)  # short, and never another file's bytes
        assert mock._server.internal_errors == []
        assert mock.problems() == ""


# -- recording: a hostile upstream ------------------------------------------------------------------------
def test_an_upstream_answer_nested_past_the_recursion_limit_is_a_502(make: Make) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/run/fake/deep", {"prompt": "p"})
    assert answer.status == 502
    assert "with a non-JSON body" in answer.json["detail"]
    assert mock._server.internal_errors == []


def test_an_upstream_result_naming_many_media_files_downloads_a_bounded_number(
    make: Make, fake: FakeFal, target: Path
) -> None:
    fake.media = {f"{i:03}.txt": (b"%d" % i, "text/plain") for i in range(70)}
    mock = make()

    envelope = http("POST", f"{mock.url}/queue/fake/media", {"prompt": "p"}).json
    assert http("GET", envelope["response_url"]).status == 200

    (entry,) = json.loads(target.read_text())["fixtures"]
    assert len(entry["media"]) == 64
    assert len([r for r in fake.requests if r.path.startswith("/media/")]) == 64
    assert mock.take_warnings() == [
        "fal_mock recorded 6 media URLs of this result as URLs, not their bytes: it names 70 files, and "
        "at most 64 are downloaded per result (the first ones)"
    ]


# -- leakage across tests --------------------------------------------------------------------------------
def test_a_multipart_upload_begun_as_the_test_ended_is_not_kept_for_the_next() -> None:
    stores = Stores()
    stores.begin_request()  # a request of the test that is ending...
    stores.reset()  # ...which ends before the request is handled
    assert stores.begin_multipart(("f00d", "a.bin"), "http://x/a.bin", "text/plain") is None
    assert stores.files._count == 0
