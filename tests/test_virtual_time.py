"""Virtual time: fal_client's polls, retries and client timeouts advance the mock's clock.

Each client scenario runs sync, and async both under pytest-asyncio and with ``asyncio.run``.
Nothing here checks wall time except lower bounds (real waits that must still happen): the
outcomes are the answers, the polls and attempts in ``fal_mock.requests`` and the clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import fal_client
import fal_client.client as fc
import pytest
from async_twins import both_ways
from fal_client import FalClientHTTPError, FalClientTimeoutError
from httpclient import http

from pytest_falmock import FalClientPatchError, FalMock
from pytest_falmock._clients import ClientRedirect
from pytest_falmock._clients._virtual_time import PollerAbandoned, VirtualTime
from pytest_falmock._clock import Clock

SLOW = "fal-ai/slow"
JSON_BODY = {"Content-Type": "application/json"}  # the control API takes JSON only
POLL_INTERVAL = 0.1  # fal_client's DEFAULT_QUEUE_POLL_INTERVAL
REAL_SLEEP, REAL_ASYNC_SLEEP, REAL_WAIT_FOR = time.sleep, asyncio.sleep, asyncio.wait_for


def statuses(mock: FalMock) -> list[int]:
    return [r.status_code for r in mock.requests if r.route == "queue.status"]


def routes(mock: FalMock) -> list[str]:
    return [r.route or "" for r in mock.requests]


# -- polls=10 and latency=5 -----------------------------------------------------------------------
def check_polled_through_latency(mock: FalMock, result: Any, offset_before: float) -> None:
    """Every poll wait moved the clock 0.1 s; the job completed once 5 s had passed on it."""
    assert result == {"n": 1}
    polls = statuses(mock)
    assert 10 <= len(polls) <= 51  # 10 polls asked for; real time also runs the clock, so maybe fewer
    assert polls == [202] * (len(polls) - 1) + [200]
    assert mock.clock.offset - offset_before == pytest.approx((len(polls) - 1) * POLL_INTERVAL)
    assert routes(mock) == ["queue.submit", *["queue.status"] * len(polls), "queue.result"]


@pytest.mark.fal_queue(polls=10)
def test_subscribe_polls_through_latency_on_the_mock_clock(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=5)
    offset = fal_mock.clock.offset

    result = fal_client.subscribe(SLOW, {})

    check_polled_through_latency(fal_mock, result, offset)
    request_id = fal_mock.requests[0].request_id
    assert request_id is not None
    assert fal_client.status(SLOW, request_id).metrics["inference_time"] >= 5


async def polled_through_latency(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=5)
    offset = fal_mock.clock.offset

    result = await fal_client.subscribe_async(SLOW, {})

    check_polled_through_latency(fal_mock, result, offset)


test_subscribe_async_polls_through_latency, test_subscribe_async_polls_through_latency_asyncio_run = (
    both_ways(polled_through_latency, pytest.mark.fal_queue(polls=10))
)


# -- 429 nine times, then success -----------------------------------------------------------------
#: The least the nine backoffs can add up to: 0.1 s doubling, capped at 30 s (sync) or 10 s (async),
#: each jittered by x0.5-1.5: half of 0.1 + 0.2 + ... + 25.6, or of 0.1 + ... + 6.4 + 10 + 10.
LEAST_BACKOFF = {"sync": 0.5 * 51.1, "async": 0.5 * 32.7}


def check_retried(mock: FalMock, offset_before: float, client: str) -> None:
    assert [r.status_code for r in mock.requests] == [429] * 9 + [200]
    assert mock.clock.offset - offset_before >= LEAST_BACKOFF[client] - 1e-6


def test_run_retries_nine_429s_on_the_mock_clock(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/busy", {"ok": True})
    fal_mock.on_error("fal-ai/busy", status=429, detail="Too many requests", times=9)
    offset = fal_mock.clock.offset

    assert fal_client.run("fal-ai/busy", {}) == {"ok": True}

    check_retried(fal_mock, offset, "sync")


async def retried(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/busy", {"ok": True})
    fal_mock.on_error("fal-ai/busy", status=429, detail="Too many requests", times=9)
    offset = fal_mock.clock.offset

    assert await fal_client.run_async("fal-ai/busy", {}) == {"ok": True}

    check_retried(fal_mock, offset, "async")


test_run_async_retries_nine_429s, test_run_async_retries_nine_429s_asyncio_run = both_ways(retried)


# -- client_timeout=2 against latency=30 ----------------------------------------------------------
def check_timed_out(mock: FalMock, error: FalClientTimeoutError, clock_before: float) -> None:
    """The clock reached the deadline; the client gave up there and cancelled the job."""
    submit, *polls, cancel = mock.requests
    assert (submit.route, cancel.route, cancel.status_code) == ("queue.submit", "queue.cancel", 200)
    assert error.request_id == submit.request_id == cancel.request_id
    assert 1 <= len(polls) <= 21  # a poll every 0.1 s of a 2 s timeout
    assert {(r.route, r.status_code) for r in polls} == {("queue.status", 202)}
    assert mock.clock.monotonic() - clock_before >= 2


def test_subscribe_client_timeout_expires_on_the_mock_clock(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=30)
    before = fal_mock.clock.monotonic()

    with pytest.raises(FalClientTimeoutError) as excinfo:
        fal_client.subscribe(SLOW, {}, client_timeout=2)

    check_timed_out(fal_mock, excinfo.value, before)


async def timed_out(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=30)
    before = fal_mock.clock.monotonic()

    with pytest.raises(FalClientTimeoutError) as excinfo:
        await fal_client.subscribe_async(SLOW, {}, client_timeout=2)

    check_timed_out(fal_mock, excinfo.value, before)


test_subscribe_async_client_timeout, test_subscribe_async_client_timeout_asyncio_run = both_ways(timed_out)


@pytest.mark.fal_queue(polls=3)
def test_subscribe_finishing_before_its_client_timeout_returns_the_result(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=1)
    assert fal_client.subscribe(SLOW, {}, client_timeout=30) == {"n": 1}
    assert routes(fal_mock)[-1] == "queue.result"


async def finished_in_time(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=1)
    assert await fal_client.subscribe_async(SLOW, {}, client_timeout=30) == {"n": 1}
    assert routes(fal_mock)[-1] == "queue.result"


test_subscribe_async_finishing_in_time, test_subscribe_async_finishing_in_time_asyncio_run = both_ways(
    finished_in_time, pytest.mark.fal_queue(polls=3)
)


# -- advance() ------------------------------------------------------------------------------------
def test_advance_completes_a_slow_job_for_an_app_that_polls_itself(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=30)
    job = http("POST", f"{fal_mock.url}/queue/{SLOW}", {}).json
    assert http("GET", job["status_url"]).json["status"] == "IN_PROGRESS"

    fal_mock.advance(30)

    status = http("GET", job["status_url"])
    assert (status.status, status.json["status"]) == (200, "COMPLETED")
    assert status.json["metrics"]["inference_time"] >= 30
    assert http("GET", job["response_url"]).json == {"n": 1}


def test_a_run_with_latency_moves_the_clock_instead_of_waiting(fal_mock: FalMock) -> None:
    fal_mock.on_run(SLOW, {"n": 1}, latency=600)
    offset = fal_mock.clock.offset
    assert fal_client.run(SLOW, {}) == {"n": 1}  # ten minutes on the mock's clock, none on the wall
    assert fal_mock.clock.offset - offset == pytest.approx(600)


def test_start_timeouts_run_out_on_the_mock_clock(fal_mock: FalMock) -> None:
    fal_mock.on_run(SLOW, {"n": 1}, latency=600)
    fal_mock.on_queue("fal-ai/queued", {"n": 2}, latency=600)
    offset = fal_mock.clock.offset

    with pytest.raises(FalClientHTTPError) as ran:
        fal_client.run(SLOW, {}, start_timeout=5)
    assert fal_mock.clock.offset - offset == pytest.approx(5)  # the run waited out its start timeout
    with pytest.raises(FalClientHTTPError) as queued:
        fal_client.subscribe("fal-ai/queued", {}, start_timeout=5)

    assert (ran.value.status_code, queued.value.status_code) == (504, 504)
    polls = statuses(fal_mock)
    assert polls[-1] == 200
    assert 1 <= len(polls) <= 51  # polled every 0.1 s until the job's 5 s ran out


def test_advance_over_the_control_api(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=30)
    job = http("POST", f"{fal_mock.url}/queue/{SLOW}", {}).json
    offset = fal_mock.clock.offset

    answer = http("POST", f"{fal_mock.base_url}/__falmock/advance", {"seconds": 30})

    assert (answer.status, answer.json) == (200, {"advanced": 30.0, "offset": offset + 30})
    assert http("GET", job["status_url"]).json["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{", "POST /__falmock/advance: the body is not valid JSON"),
        (b"[30]", 'POST /__falmock/advance: expected a JSON body {"seconds": N}, got [30]'),
        (b'{"secs": 1}', """expected a JSON body {"seconds": N}, got {'secs': 1}"""),
        (
            b'{"seconds": "1"}',
            "POST /__falmock/advance: fal_mock.advance(): seconds must be a number, got '1'",
        ),
        (b'{"seconds": -1}', "seconds must be a finite, non-negative number, got -1"),
    ],
)
def test_advance_over_the_control_api_rejects_a_bad_body(fal_mock: FalMock, body: bytes, detail: str) -> None:
    offset = fal_mock.clock.offset
    answer = http("POST", f"{fal_mock.base_url}/__falmock/advance", raw=body, headers=JSON_BODY)
    assert answer.status == 400
    assert detail in answer.json["detail"]
    assert fal_mock.clock.offset == offset
    assert http("GET", f"{fal_mock.base_url}/__falmock/advance").status == 405


@pytest.mark.parametrize(
    ("seconds", "error", "message"),
    [
        (-1, ValueError, "seconds must be a finite, non-negative number, got -1"),
        (float("inf"), ValueError, "got inf"),
        (float("nan"), ValueError, "got nan"),
        ("5", TypeError, "seconds must be a number, got '5'"),
        (True, TypeError, "got True"),
    ],
)
def test_advance_validates_its_argument(seconds: Any, error: type[Exception], message: str) -> None:
    mock = FalMock()
    with pytest.raises(error, match=r"fal_mock\.advance\(\): " + ".*" + message.replace("(", r"\(")):
        mock.advance(seconds)
    assert mock.clock.offset == 0


# -- the app's own waits, and nothing else patched ------------------------------------------------
def test_the_apps_own_sleep_still_waits_and_moves_the_clock(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1}, latency=0.2)
    job = http("POST", f"{fal_mock.url}/queue/{SLOW}", {}).json
    assert http("GET", job["status_url"]).json["status"] == "IN_PROGRESS"
    offset, started = fal_mock.clock.offset, time.monotonic()

    time.sleep(0.2)  # not patched: a real wait

    assert time.monotonic() - started >= 0.2
    assert fal_mock.clock.offset == offset  # the wall clock moved the mock's clock
    assert http("GET", job["status_url"]).json["status"] == "COMPLETED"


def test_only_the_client_modules_waits_are_replaced(fal_mock: FalMock) -> None:
    assert (time.sleep, asyncio.sleep, asyncio.wait_for) == (REAL_SLEEP, REAL_ASYNC_SLEEP, REAL_WAIT_FOR)
    assert (fc.time.sleep, fc.asyncio.sleep) != (REAL_SLEEP, REAL_ASYNC_SLEEP)
    assert (fc.time.time, fc.time.monotonic) == (time.time, time.monotonic)  # the rest is forwarded
    assert fc.asyncio.TimeoutError is asyncio.TimeoutError
    assert fc.asyncio.Lock is asyncio.Lock
    assert repr(fc.time) == f"<fal_mock virtual-time proxy of {time!r}>"


async def apps_own_async_sleep(fal_mock: FalMock) -> None:
    offset, started = fal_mock.clock.offset, time.monotonic()
    await asyncio.sleep(0.1)
    assert time.monotonic() - started >= 0.1
    assert fal_mock.clock.offset == offset


test_the_apps_own_async_sleep_still_waits, test_the_apps_own_async_sleep_still_waits_asyncio_run = both_ways(
    apps_own_async_sleep
)


# -- the opt-out ----------------------------------------------------------------------------------
@pytest.mark.fal_mock(virtual_time=False)
@pytest.mark.fal_queue(polls=3)
def test_virtual_time_false_waits_on_the_wall_clock(fal_mock: FalMock) -> None:
    assert (fc.time, fc.asyncio) == (time, asyncio)
    fal_mock.on_queue(SLOW, {"n": 1})
    offset, started = fal_mock.clock.offset, time.monotonic()

    assert fal_client.subscribe(SLOW, {}) == {"n": 1}

    assert time.monotonic() - started >= 2 * POLL_INTERVAL  # three polls, two real waits
    assert fal_mock.clock.offset == offset
    assert statuses(fal_mock) == [202, 202, 200]


async def real_waits(fal_mock: FalMock) -> None:
    fal_mock.on_queue(SLOW, {"n": 1})
    offset, started = fal_mock.clock.offset, time.monotonic()

    assert await fal_client.subscribe_async(SLOW, {}) == {"n": 1}

    assert time.monotonic() - started >= 2 * POLL_INTERVAL
    assert fal_mock.clock.offset == offset
    assert statuses(fal_mock) == [202, 202, 200]


test_virtual_time_false_waits_async, test_virtual_time_false_waits_asyncio_run = both_ways(
    real_waits, pytest.mark.fal_mock(virtual_time=False), pytest.mark.fal_queue(polls=3)
)


def test_a_mock_without_virtual_time_waits_out_run_latency() -> None:
    with FalMock(virtual_time=False) as mock:
        assert mock.settings.virtual_time is False
        mock.on_run(SLOW, {"n": 1}, latency=0.15)
        started = time.monotonic()
        assert http("POST", f"{mock.url}/run/{SLOW}", {}).json == {"n": 1}
        assert time.monotonic() - started >= 0.15
        assert mock.clock.offset == 0


def test_configure_switches_virtual_time_for_one_test() -> None:
    mock = FalMock()
    mock.configure(virtual_time=False)
    assert mock.settings.virtual_time is False
    mock.reset()
    assert mock.settings.virtual_time is True


# -- a fal_client without what virtual time patches -----------------------------------------------
@pytest.mark.parametrize(
    ("name", "missing"), [("time", "time.sleep"), ("asyncio", "asyncio.sleep, asyncio.wait_for")]
)
def test_a_client_without_its_waits_fails_loudly_and_names_them(
    monkeypatch: pytest.MonkeyPatch, name: str, missing: str
) -> None:
    monkeypatch.delattr(fc, name)
    patch = ClientRedirect.for_test("http://127.0.0.1:1", Clock())

    with pytest.raises(FalClientPatchError, match=f"has no {missing} in this fal_client version") as excinfo:
        patch.apply()

    assert "virtual_time=False" in str(excinfo.value)
    assert not patch.active
    assert fc.RUN_URL_FORMAT != "http://127.0.0.1:1/fal/run/"
    real_time_patch = ClientRedirect.for_test("http://127.0.0.1:1")  # without virtual time it still applies
    assert real_time_patch.apply() is True
    real_time_patch.undo()


def test_undo_restores_the_client_modules_waits() -> None:
    patch = ClientRedirect.for_test("http://127.0.0.1:1", Clock())
    patch.apply()
    assert fc.time is not time
    patch.undo()
    assert (fc.time, fc.asyncio) == (time, asyncio)


# -- the virtual waits on their own -----------------------------------------------------------------
def test_a_future_times_out_on_the_clock_and_its_poller_stops() -> None:
    clock = Clock()
    waits = VirtualTime(clock)

    def poll_forever() -> None:
        while True:
            waits.sleep(0.3)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = waits.submit(pool.submit, poll_forever)
        with pytest.raises(concurrent.futures.TimeoutError):
            future.exception(timeout=1)
        concurrent.futures.wait([future], timeout=5)
    assert isinstance(future.exception(), PollerAbandoned)
    assert clock.offset == pytest.approx(1, abs=0.1)


def test_a_poller_busy_when_its_waiter_gives_up_stops_at_its_next_sleep() -> None:
    waits = VirtualTime(Clock())
    gave_up = threading.Event()

    def poll() -> str:
        gave_up.wait(5)  # a request in flight, on the wall clock
        waits.sleep(0.1)
        return "never"

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = waits.submit(pool.submit, poll)
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=0.05)
        gave_up.set()
        concurrent.futures.wait([future], timeout=5)
    assert isinstance(future.exception(), PollerAbandoned)


def test_a_future_still_queued_can_be_cancelled() -> None:
    waits = VirtualTime(Clock())
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = waits.submit(pool.submit, release.wait, 5)
        queued = waits.submit(pool.submit, lambda: "never")
        assert queued.cancel()
        assert (queued.cancelled(), queued.running()) == (True, False)
        release.set()
        assert busy.result(timeout=5) is True
    with pytest.raises(ValueError, match="sleep length must be non-negative"):
        waits.sleep(-1)


def test_the_virtual_wait_for_mirrors_asyncio() -> None:
    clock = Clock()
    waits = VirtualTime(clock)

    async def stubborn() -> str:
        try:
            await waits.async_sleep(10)
        except asyncio.CancelledError:
            return "kept"  # ignores the cancellation, like a task may
        return "slept"

    async def scenario() -> None:
        assert await waits.wait_for(waits.async_sleep(0, "now"), None) == "now"
        assert await waits.wait_for(stubborn(), 1) == "kept"
        assert clock.offset == pytest.approx(1, abs=0.1)
        outer = asyncio.ensure_future(waits.wait_for(REAL_ASYNC_SLEEP(10), 60))
        await REAL_ASYNC_SLEEP(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    asyncio.run(scenario())
