"""The guard: fal calls made outside a mocked test never reach fal.ai, and say how to fix it.

Every inner run here carries ``net_guard.CONFTEST``: a name lookup of, or a connection to,
anything but loopback raises and is written down, so "never reaches fal.ai" is checked, not
assumed. Outer tests whose inner run switches the guard off are marked ``fal_real`` so this
session's own guard does not answer the inner run's calls.
"""

from __future__ import annotations

import pytest
from fake_fal_upstream import FakeFal
from inner_runs import QUIET, QUIET_WITH_XDIST
from net_guard import CONFTEST, attempts

from pytest_falmock._clients._guard import GuardedCall, refusal

MODEL = "fal-ai/flux/dev"
RID = "4a6b2c1e-0000-4000-8000-000000000000"
APP = "fal-ai/flux"
QUEUE = f"https://queue.fal.run/{APP}/requests/{RID}"
#: Each fal_client entry point (async ones on a fresh client: each ``asyncio.run`` has its own
#: loop) and the requests the guard must see from it: one each, no retry.
CALLS = {
    "run": ("fal_client.run(MODEL, ARGS)", [f"POST https://fal.run/{MODEL}"]),
    "submit": ("fal_client.submit(MODEL, ARGS)", [f"POST https://queue.fal.run/{MODEL}"]),
    "subscribe": ("fal_client.subscribe(MODEL, ARGS)", [f"POST https://queue.fal.run/{MODEL}"]),
    "status": ("fal_client.status(MODEL, RID)", [f"GET {QUEUE}/status"]),
    "result": ("fal_client.result(MODEL, RID)", [f"GET {QUEUE}/status"]),
    "cancel": ("fal_client.cancel(MODEL, RID)", [f"PUT {QUEUE}/cancel"]),
    "stream": ("list(fal_client.stream(MODEL, ARGS))", [f"POST https://fal.run/{MODEL}/stream"]),
    "upload": ('fal_client.upload(b"x", "text/plain")', ["POST https://rest.fal.ai/storage/auth/token"]),
    "realtime": ("realtime()", ["POST https://rest.fal.ai/tokens/"]),
    "realtime_no_jwt": ("realtime(use_jwt=False)", [f"GET wss://fal.run/{MODEL}/realtime"]),
    "run_async": ("asyncio.run(ASYNC().run(MODEL, ARGS))", [f"POST https://fal.run/{MODEL}"]),
    "submit_async": ("asyncio.run(ASYNC().submit(MODEL, ARGS))", [f"POST https://queue.fal.run/{MODEL}"]),
    "subscribe_async": (
        "asyncio.run(ASYNC().subscribe(MODEL, ARGS))",
        [f"POST https://queue.fal.run/{MODEL}"],
    ),
    "status_async": ("asyncio.run(ASYNC().status(MODEL, RID))", [f"GET {QUEUE}/status"]),
    "result_async": ("asyncio.run(ASYNC().result(MODEL, RID))", [f"GET {QUEUE}/status"]),
    "cancel_async": ("asyncio.run(ASYNC().cancel(MODEL, RID))", [f"PUT {QUEUE}/cancel"]),
    "stream_async": ("asyncio.run(stream_async())", [f"POST https://fal.run/{MODEL}/stream"]),
    "upload_async": (
        'asyncio.run(ASYNC().upload(b"x", "text/plain"))',
        # the CDN token, then the fallback storage the async client tries next
        ["POST https://rest.fal.ai/storage/auth/token", "POST https://rest.fal.ai/storage/upload/initiate"],
    ),
}
CLIENT_CALLS = f"""
import asyncio
import fal_client
import pytest

MODEL, RID, ARGS = {MODEL!r}, {RID!r}, {{"prompt": "a cat"}}
ASYNC = fal_client.AsyncClient


def realtime(**options):
    with fal_client.realtime(MODEL, **options) as connection:
        connection.send({{"prompt": "a cat"}})


async def stream_async():
    return [event async for event in ASYNC().stream(MODEL, ARGS)]


CALLS = {{
{"".join(f"    {name!r}: lambda: {code},{chr(10)}" for name, (code, _) in CALLS.items())}}}
"""


def texts(report: pytest.TestReport | pytest.CollectReport) -> str:
    return "\n".join([report.longreprtext, *(content for _, content in report.sections)])


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    return pytester


def test_every_client_call_outside_a_mocked_test_is_refused_once_with_the_teaching_message(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(
        test_forgot=CLIENT_CALLS
        + """
@pytest.mark.parametrize("name", sorted(CALLS))
def test_raises(name):
    CALLS[name]()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_swallows(name):
    try:
        CALLS[name]()
    except Exception:
        pass
"""
    )
    reprec = inner.inline_run(*QUIET, "--tb=short")
    failed = {report.nodeid.split("::")[1]: report for report in reprec.getfailures()}
    assert sorted(failed) == sorted(
        f"test_{kind}[{name}]" for kind in ("raises", "swallows") for name in CALLS
    )
    for name, (_, calls) in CALLS.items():
        expected = refusal([GuardedCall(*call.split(" ", 1)) for call in calls], len(calls))
        # a swallowed error still fails the test, with the client's own message: no retries
        assert failed[f"test_swallows[{name}]"].longreprtext == expected, name
        assert expected in texts(failed[f"test_raises[{name}]"]), name
    assert attempts(inner.path) == []


def test_the_client_error_itself_teaches_the_fix(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import fal_client
        import pytest

        def test_forgot_the_fixture():
            with pytest.raises(fal_client.FalClientHTTPError) as info:
                fal_client.run("fal-ai/whisper", {"audio_url": "x"})
            assert info.value.status_code == 403
            message = str(info.value)
            assert message.startswith("fal_mock guard: POST https://fal.run/fal-ai/whisper was stopped")
            assert "Use the fal_mock fixture (or @pytest.mark.fal_mock)" in message
            assert "@pytest.mark.fal_real" in message
            assert "fal_guard = false" in message
        """
    )
    reprec = inner.inline_run(*QUIET)
    (report,) = reprec.getfailures()  # the test caught the error, the guard still fails it
    assert report.longreprtext.startswith("fal_mock guard: POST https://fal.run/fal-ai/whisper")
    assert attempts(inner.path) == []


def test_calls_at_import_time_fail_the_collection_with_the_same_message(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_swallowed="""
        import fal_client

        try:
            WARM = fal_client.run("fal-ai/at-import", {})
        except Exception:
            WARM = None

        def test_never_runs():
            pass
        """,
        test_raised="""
        import fal_client

        fal_client.submit("fal-ai/at-import-too", {})

        def test_never_runs_either():
            pass
        """,
        test_async_at_import="""
        import asyncio
        import fal_client

        asyncio.run(fal_client.AsyncClient().run("fal-ai/at-import-async", {}))
        """,
    )
    result = inner.runpytest(*QUIET, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_async_at_import.py*",
            "*FalClientHTTPError: fal_mock guard: POST https://fal.run/fal-ai/at-import-async was stopped*",
            "*ERROR collecting test_raised.py*",
            "*FalClientHTTPError: fal_mock guard: POST https://queue.fal.run/fal-ai/at-import-too was "
            "stopped before it reached fal.ai*",
            "*ERROR collecting test_swallowed.py*",
            "fal_mock guard: POST https://fal.run/fal-ai/at-import was stopped before it reached fal.ai*",
            "*Interrupted: 3 errors during collection*",
        ]
    )
    assert attempts(inner.path) == []


def test_a_call_in_a_conftest_is_refused_before_collection(inner: pytest.Pytester) -> None:
    conftest = inner.path / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + """
import fal_client

try:
    fal_client.run("fal-ai/in-conftest", {})
except Exception:
    pass
"""
    )
    inner.makepyfile("def test_fine(): pass")
    result = inner.runpytest(*QUIET)
    result.stdout.fnmatch_lines(
        ["*ERROR collecting*", "fal_mock guard: POST https://fal.run/fal-ai/in-conftest was stopped*"]
    )
    assert result.ret != pytest.ExitCode.OK
    assert attempts(inner.path) == []


def test_session_and_module_fixtures_fail_the_test_that_set_them_up(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asyncio
        import fal_client
        import pytest

        @pytest.fixture(scope="session")
        def warm_session():
            try:
                fal_client.run("fal-ai/session-warmup", {})
            except Exception:
                pass

        @pytest.fixture(scope="module")
        def warm_module():
            return asyncio.run(fal_client.AsyncClient().subscribe("fal-ai/module-warmup", {}))

        def test_first(warm_session, fal_mock):
            pass

        def test_second(warm_session, fal_mock):
            pass

        def test_module(warm_module):
            pass
        """
    )
    reprec = inner.inline_run(*QUIET)
    passed, _, failed = reprec.listoutcomes()
    assert [r.nodeid.split("::")[1] for r in passed] == ["test_second"]
    by_name = {r.nodeid.split("::")[1]: r for r in failed}
    assert sorted(by_name) == ["test_first", "test_module"]
    assert by_name["test_first"].when == "setup"
    assert by_name["test_first"].longreprtext.startswith(
        "fal_mock guard: POST https://fal.run/fal-ai/session-warmup was stopped"
    )
    assert by_name["test_module"].when == "setup"
    assert (
        "POST https://queue.fal.run/fal-ai/module-warmup was stopped" in by_name["test_module"].longreprtext
    )
    assert attempts(inner.path) == []


@pytest.mark.fal_real  # the inner runs switch their guard off: this session's must not answer
@pytest.mark.parametrize("switch", ["marker", "ini"])
def test_fal_real_and_fal_guard_false_let_the_call_go_to_fal_ai(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    monkeypatch.setenv("FAL_KEY", "fk-real-0123456789:real-secret-abcdefgh")
    if switch == "ini":
        inner.makeini("[pytest]\nfal_guard = false\n")
    mark = "@pytest.mark.fal_real" if switch == "marker" else ""
    inner.makepyfile(
        f"""
        import fal_client
        import fal_client.client as fc
        import pytest
        from conftest import NonLoopbackAttempt

        {mark}
        def test_reaches_for_fal_ai():
            assert fc.RUN_URL_FORMAT == "https://fal.run/"
            with pytest.raises(NonLoopbackAttempt):
                fal_client.run("fal-ai/real", {{}})

        def test_guarded_again_after_it():
            with pytest.raises(fal_client.FalClientHTTPError if {switch == "marker"} else NonLoopbackAttempt):
                fal_client.run("fal-ai/real", {{}})
        """
    )
    reprec = inner.inline_run(*QUIET, "--strict-markers")
    if switch == "marker":
        passed, _, failed = reprec.listoutcomes()
        assert [r.nodeid.split("::")[1] for r in passed] == ["test_reaches_for_fal_ai"]
        assert [r.nodeid.split("::")[1] for r in failed] == ["test_guarded_again_after_it"]  # refused
        assert attempts(inner.path) == ["name lookup fal.run"]
    else:
        reprec.assertoutcome(passed=2)
        assert attempts(inner.path) == ["name lookup fal.run", "name lookup fal.run"]


def test_fal_mock_wins_over_fal_real(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import fal_client
        import pytest

        @pytest.mark.fal_real
        def test_both(fal_mock):
            fal_mock.on_run("fal-ai/x", {"ok": True})
            assert fal_client.run("fal-ai/x", {}) == {"ok": True}
        """
    )
    inner.inline_run(*QUIET).assertoutcome(passed=1)
    assert attempts(inner.path) == []


def test_xdist_workers_guard_too(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import fal_client

        def test_one():
            fal_client.run("fal-ai/one", {})

        def test_two(fal_mock):
            fal_mock.on_run("fal-ai/two", {"n": 2})
            assert fal_client.run("fal-ai/two", {}) == {"n": 2}
        """
    )
    result = inner.runpytest(*QUIET_WITH_XDIST, "-n", "1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fal_mock guard: POST https://fal.run/fal-ai/one was stopped*"])


def test_recording_goes_through_fal_mock_tests_and_the_guard_stays(
    inner: pytest.Pytester, fake: FakeFal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAL_KEY", "fk-guard-0123456789:guard-secret-abcdefgh")
    inner.makepyfile(
        """
        import fal_client

        def test_recorded(fal_mock):
            assert fal_client.run("fal-ai/fast-sdxl", {"prompt": "a tree"})

        def test_unmocked():
            fal_client.run("fal-ai/fast-sdxl", {"prompt": "a tree"})
        """
    )
    result = inner.runpytest(*QUIET, "--fal-record", f"--fal-upstream={fake.url}", "--fal-fixtures=fal.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fal_mock guard: POST https://fal.run/fal-ai/fast-sdxl was stopped*"])
    assert "fal-ai/fast-sdxl" in (inner.path / "fal.json").read_text()
    assert attempts(inner.path) == []


def test_a_call_after_the_last_test_fails_the_run(inner: pytest.Pytester) -> None:
    conftest = inner.path / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + """
import fal_client
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    try:
        fal_client.run("fal-ai/too-late", {})
    except Exception:
        pass
"""
    )
    inner.makepyfile("def test_fine(): pass")
    result = inner.runpytest(*QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*= fal_mock guard =*",
            "outside any test: fal_mock guard: POST https://fal.run/fal-ai/too-late was stopped*",
        ]
    )
    assert attempts(inner.path) == []
