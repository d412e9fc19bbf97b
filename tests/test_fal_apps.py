"""The ``fal`` package (``fal.apps``, fal 1.x) under ``fal_mock``, exactly like ``fal_client``."""

from __future__ import annotations

import os
import time

import fal.apps
import fal.auth
import pytest
from inner_runs import QUIET
from net_guard import CONFTEST, attempts

from pytest_falmock import FalClientPatchError, FalMock
from pytest_falmock._clients import ClientRedirect
from pytest_falmock._clients._fal_apps import REQUIRED
from pytest_falmock._clock import Clock
from pytest_falmock._constants import DUMMY_FAL_KEY

MODEL = "fal-ai/flux/dev"
FLUX = {"images": [{"url": "https://example.com/cat.png"}]}


def routes(mock: FalMock) -> list[tuple[str, str, str, dict[str, str]]]:
    return [(r.method, r.route or "", r.path, dict(r.query)) for r in mock.requests]


def test_run_goes_through_the_queue_with_fal_apps_trailing_slash_urls(fal_mock: FalMock) -> None:
    fal_mock.on_queue(MODEL, FLUX)

    assert fal.apps.run(MODEL, {"prompt": "a cat"}) == FLUX

    (submit, status, result) = fal_mock.requests
    assert (submit.method, submit.route, submit.path, submit.input) == (
        "POST",
        "queue.submit",
        f"/fal/queue/{MODEL}",
        {"prompt": "a cat"},
    )
    rid = submit.request_id
    assert (status.route, status.path, dict(status.query)) == (
        "queue.status",
        f"/fal/queue/fal-ai/flux/requests/{rid}/status/",
        {"logs": "0"},
    )
    assert (result.route, result.path) == ("queue.result", f"/fal/queue/fal-ai/flux/requests/{rid}/")
    fal_mock.assert_called(MODEL, times=1)


@pytest.mark.fal_queue(polls_before_in_progress=2, polls_before_completed=4)
def test_submit_and_its_handle(fal_mock: FalMock) -> None:
    fal_mock.on_queue(MODEL, FLUX)

    handle = fal.apps.submit(MODEL, {"prompt": "a cat"})

    assert isinstance(handle.status(), fal.apps.Queued)
    events = list(handle.iter_events(logs=True))
    assert [type(event) for event in events] == [fal.apps.InProgress, fal.apps.InProgress]
    assert any(line["message"] == "Job started processing." for line in events[0].logs or [])
    assert handle.fetch_result() == FLUX
    assert handle.get() == FLUX
    polls = [(dict(r.query), r.status_code) for r in fal_mock.requests if r.route == "queue.status"]
    assert polls == [
        ({"logs": "0"}, 202),  # status()
        ({"logs": "1"}, 202),  # iter_events(logs=True) ...
        ({"logs": "1"}, 202),
        ({"logs": "1"}, 200),  # ... ends at COMPLETED: fal.apps reads HTTP 200 as done
        ({"logs": "0"}, 200),  # get()
    ]


def test_fal_apps_polls_and_latency_run_on_the_mock_clock(fal_mock: FalMock) -> None:
    fal_mock.on_queue(MODEL, FLUX, latency=5)
    offset = fal_mock.clock.offset

    assert fal.apps.run(MODEL, {"prompt": "a cat"}) == FLUX  # five seconds on the mock's clock only

    polls = [r for r in fal_mock.requests if r.route == "queue.status"]
    assert 10 <= len(polls) <= 26  # one every 0.2 s of fal.apps' poll delay; real time runs the clock too
    assert fal_mock.clock.offset - offset == pytest.approx((len(polls) - 1) * 0.2)


def test_cancel_through_the_handle(fal_mock: FalMock) -> None:
    fal_mock.on_queue(MODEL, FLUX, latency=30)
    handle = fal.apps.submit(MODEL, {"prompt": "a cat"})

    handle.cancel()

    status = handle.status()
    assert isinstance(status, fal.apps.Completed)
    assert (status.error, status.error_type) == ("Request was cancelled", "request_cancelled")
    assert [r.route for r in fal_mock.requests] == ["queue.submit", "queue.cancel", "queue.status"]
    assert next(r for r in fal_mock.requests if r.route == "queue.cancel").method == "PUT"


def test_stream_events_and_the_app_root(fal_mock: FalMock) -> None:
    fal_mock.on_stream(MODEL, [{"step": 1}, {"step": 2}])
    fal_mock.on_run("fal-ai/whisper", {"text": "hello"})

    assert list(fal.apps.stream(MODEL, {"prompt": "a cat"}, path="/stream")) == [
        'data: {"step":1}',
        'data: {"step":2}',
    ]
    assert b"".join(fal.apps.stream("fal-ai/whisper", {"audio_url": "x"})) == b'{"text":"hello"}'
    assert [(r.route, r.path) for r in fal_mock.requests] == [
        ("run.stream", f"/fal/run/{MODEL}/stream"),
        ("run", "/fal/run/fal-ai/whisper"),
    ]


def test_an_unmatched_fal_apps_call_fails_the_test_like_any_other(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import fal.apps
        import httpx
        import pytest

        def test_unmatched(fal_mock):
            with pytest.raises(httpx.HTTPStatusError):
                fal.apps.run("fal-ai/nobody-registered-this", {})

        def test_forgot_the_fixture():
            with pytest.raises(httpx.HTTPStatusError) as info:
                fal.apps.run("fal-ai/flux/dev", {})
            assert info.value.response.status_code == 403
        """
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=1, errors=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*fal_mock: 1 request matched no registered fixture*",
            "*fal_mock guard: POST https://queue.fal.run/fal-ai/flux/dev was stopped before it reached*",
        ]
    )
    assert attempts(pytester.path) == []


@pytest.fixture
def developers_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The developer's shell has a real key (set before ``fal_mock`` applies its redirect)."""
    monkeypatch.setenv("FAL_KEY", "fk-real-0123456789:real-secret-abcdefgh")
    return "fk-real-0123456789:real-secret-abcdefgh"


def test_the_dummy_key_is_one_fal_accepts_and_the_real_key_stays_home(
    developers_key: str, fal_mock: FalMock
) -> None:
    assert os.environ["FAL_KEY"] == DUMMY_FAL_KEY
    assert fal.auth.key_credentials() == tuple(DUMMY_FAL_KEY.split(":"))  # fal's own parser
    assert fal.apps.get_credentials().to_headers() == {"Authorization": f"Key {DUMMY_FAL_KEY}"}
    assert developers_key not in repr(fal.apps.get_credentials())


def test_the_cached_http_client_is_rebuilt_on_the_way_in_and_out() -> None:
    before = fal.apps._get_http_client()
    redirect = ClientRedirect.for_test("http://127.0.0.1:1", Clock())
    redirect.apply()
    try:
        assert fal.apps.time is not time  # its sleeps advance the clock
        during = fal.apps._get_http_client()
        assert during is not before
        assert fal.apps._QUEUE_URL_FORMAT == "http://127.0.0.1:1/fal/queue/{app_id}"
        assert fal.apps._STREAM_URL_FORMAT == "http://127.0.0.1:1/fal/run/{app_id}"
        assert fal.apps._REALTIME_URL_FORMAT == fal.apps._WS_URL_FORMAT == "ws://127.0.0.1:1/fal/run/{app_id}"
    finally:
        redirect.undo()
    assert fal.apps._get_http_client() is not during
    assert fal.apps.time is time


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_missing_fal_apps_name_fails_loudly_and_names_it(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delattr(fal.apps, missing)
    redirect = ClientRedirect.for_test("http://127.0.0.1:1")

    with pytest.raises(FalClientPatchError, match=f"fal.apps has no {missing} in this fal version") as info:
        redirect.apply()

    assert "Pin a supported fal or opt out with @pytest.mark.fal_mock(patch_client=False)" in str(info.value)
    assert not redirect.active


def test_a_missing_fal_apps_constant_errors_the_test_at_setup(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import fal.apps
        import pytest

        patch = pytest.MonkeyPatch()

        def pytest_configure(config):
            patch.delattr(fal.apps, "_WS_URL_FORMAT")

        def pytest_unconfigure(config):
            patch.undo()
        """
    )
    pytester.makepyfile(
        """
        def test_never_runs(fal_mock):
            raise AssertionError("the body must not run")
        """
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*FalClientPatchError: fal.apps has no _WS_URL_FORMAT in this fal version*"])
