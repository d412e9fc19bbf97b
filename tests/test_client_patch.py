"""How the ``fal_mock`` fixture points the real ``fal_client`` at the mock, and undoes it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import fal_client
import fal_client.client as fc
import pytest
from inner_runs import QUIET

from pytest_falmock import FalClientPatchError, FalMock
from pytest_falmock._clients import ClientRedirect
from pytest_falmock._clients._fal_client import CACHED, KEPT
from pytest_falmock._clients._imports import watch
from pytest_falmock._clients._patches import no_proxy_value
from pytest_falmock._constants import DUMMY_FAL_KEY

#: What the constants were before any test ran (collection happens before every fixture): the
#: guard's, which this session applied when fal_client was imported.
ORIGINAL = {
    name: getattr(fc, name)
    for name in (
        "RUN_URL_FORMAT",
        "QUEUE_URL_FORMAT",
        "REST_URL",
        "CDN_URL",
        "REALTIME_URL_FORMAT",
        "FAL_CDN_FALLBACK_URL",
    )
    if hasattr(fc, name)
}
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: a proxy that never answers


def expected_targets(mock: FalMock) -> dict[str, str]:
    root = mock.url
    targets = {
        "RUN_URL_FORMAT": root + "/run/",
        "QUEUE_URL_FORMAT": root + "/queue/",
        "REST_URL": root + "/rest",
        "CDN_URL": root + "/cdn",
        "REALTIME_URL_FORMAT": root.replace("http://", "ws://") + "/run/",
    }
    if "FAL_CDN_FALLBACK_URL" in ORIGINAL:
        targets["FAL_CDN_FALLBACK_URL"] = root + "/cdn"
    return targets


@pytest.fixture
def real_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A developer's shell: real credentials, a proxy, and clients that already cached them."""
    monkeypatch.setenv("FAL_KEY", "real-key")
    monkeypatch.setenv("FAL_KEY_ID", "real-id")
    monkeypatch.setenv("FAL_KEY_SECRET", "real-secret")
    monkeypatch.setenv("FAL_FORCE_AUTH_BY_USER", "1")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.delenv("no_proxy", raising=False)
    fal_client.sync_client.__dict__["_auth"] = "cached real credentials"
    fal_client.sync_client.__dict__["_client"] = "cached real httpx client"
    fal_client.async_client.__dict__["_token_manager"] = "cached real token manager"
    yield
    for client in (fal_client.sync_client, fal_client.async_client):
        for name in CACHED:
            client.__dict__.pop(name, None)


def test_fixture_patches_constants_environment_and_cached_clients(
    real_environment: None, fal_mock: FalMock
) -> None:
    assert {name: getattr(fc, name) for name in ORIGINAL} == expected_targets(fal_mock)
    assert os.environ["FAL_KEY"] == DUMMY_FAL_KEY
    for name in ("FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_FORCE_AUTH_BY_USER"):
        assert name not in os.environ
    assert os.environ["NO_PROXY"] == "internal.example,127.0.0.1,localhost"
    assert os.environ["no_proxy"] == "127.0.0.1,localhost"
    # the real credentials and clients are gone; the sync client may be an earlier test's mock-bound one
    kept = {name: value for name, value in fal_client.sync_client.__dict__.items() if name in CACHED}
    assert set(kept) <= set(KEPT)
    assert getattr(kept.get("_auth"), "token", DUMMY_FAL_KEY) == DUMMY_FAL_KEY
    assert not set(CACHED) & set(fal_client.async_client.__dict__)


def test_client_works_through_a_proxy_environment_with_real_credentials(
    real_environment: None, fal_mock: FalMock
) -> None:
    fal_mock.on_run("fal-ai/fast-sdxl", {"ok": True})

    assert fal_client.run("fal-ai/fast-sdxl", {"prompt": "cat"}) == {"ok": True}
    url = fal_client.upload(b"bytes", "text/plain", file_name="a.txt")

    assert fal_client.sync_client._auth.header_value == f"Key {DUMMY_FAL_KEY}"
    assert [r.route for r in fal_mock.requests] == ["run", "storage.token", "cdn.upload"]
    assert url.startswith(fal_mock.url + "/files/")


def test_user_built_clients_inside_a_test_use_the_mock(fal_mock: FalMock) -> None:
    fal_mock.on_run("fal-ai/fast-sdxl", {"ok": True})
    client = fal_client.SyncClient()

    assert client.run("fal-ai/fast-sdxl", {"prompt": "cat"}) == {"ok": True}
    assert client.upload(b"abc", "text/plain", file_name="c.txt").startswith(fal_mock.url + "/files/")
    assert [(r.method, r.path) for r in fal_mock.requests] == [
        ("POST", "/fal/run/fal-ai/fast-sdxl"),
        ("POST", "/fal/rest/storage/auth/token"),
        ("POST", "/fal/cdn/files/upload"),
    ]


@pytest.mark.fal_mock(patch_client=False)
def test_patch_client_false_leaves_fal_client_alone(fal_mock: FalMock) -> None:
    assert {name: getattr(fc, name) for name in ORIGINAL} == ORIGINAL
    assert os.environ.get("FAL_KEY") != DUMMY_FAL_KEY
    assert fal_mock.url.startswith("http://127.0.0.1:")


def test_constants_and_environment_are_restored_after_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import fal_client
        import fal_client.client as fc

        BEFORE = (fc.RUN_URL_FORMAT, fc.QUEUE_URL_FORMAT, fc.REST_URL, fc.CDN_URL, fc.REALTIME_URL_FORMAT)

        def test_a_uses_the_mock(fal_mock, monkeypatch):
            fal_mock.on_run("fal-ai/x", {"n": 1})
            assert fal_client.run("fal-ai/x", {}) == {"n": 1}
            assert fc.QUEUE_URL_FORMAT == fal_mock.url + "/queue/"
            assert "_client" in fal_client.sync_client.__dict__

        def test_b_runs_after_it():
            assert (
                fc.RUN_URL_FORMAT, fc.QUEUE_URL_FORMAT, fc.REST_URL, fc.CDN_URL, fc.REALTIME_URL_FORMAT
            ) == BEFORE
            assert os.environ["FAL_KEY"] == "kept-key"
            assert os.environ["FAL_KEY_ID"] == "kept-id"
            assert "_client" not in fal_client.sync_client.__dict__
        """
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAL_KEY", "kept-key")
        mp.setenv("FAL_KEY_ID", "kept-id")
        result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("virtual_time", [True, False])
def test_an_expired_sync_subscribe_neither_leaks_into_the_next_test_nor_hangs_at_exit(
    pytester: pytest.Pytester, virtual_time: bool
) -> None:
    """fal_client leaves a poller running when ``subscribe(client_timeout=...)`` expires.

    Under virtual time it stops at the timeout; in real time the fixture waits for it. Either
    way it meets its own (cancelled) job rather than polling the next test's mock, or retrying
    a stopped server for ~50 s before the interpreter can exit.
    """
    pytester.makepyfile(
        f"""
        import time
        import fal_client
        import pytest

        pytestmark = pytest.mark.fal_mock(virtual_time={virtual_time})

        def expire(fal_mock):
            fal_mock.on_queue("fal-ai/slow", {{"n": 1}}, latency=3)
            with pytest.raises(fal_client.FalClientTimeoutError):
                fal_client.subscribe("fal-ai/slow", {{}}, client_timeout=1.1)  # fal_client's least

        def test_a_expires(fal_mock):
            expire(fal_mock)

        def test_b_sees_no_stray_polls(fal_mock):
            time.sleep(0.3)  # three of fal_client's poll intervals
            assert fal_mock.requests == []

        def test_c_expires_last(fal_mock):
            expire(fal_mock)
            if {virtual_time}:  # the poller stopped at the timeout: the cancel came last
                assert fal_mock.requests[-1].route == "queue.cancel"
        """
    )
    pytester.makeconftest(
        """
        import threading

        def pytest_sessionfinish(session):
            # the mock has stopped: a poller still at work now would retry it for ~50 s and
            # hold up the interpreter's exit (which joins the executor's threads)
            for thread in threading.enumerate():
                if thread.name.startswith("fal_mock-fal_client"):
                    thread.join(10)
                    assert not thread.is_alive(), "a fal_client poller outlived the session"
        """
    )
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=3)
    assert "outlived" not in result.stdout.str() + result.stderr.str()
    assert result.ret == 0


def test_plugin_works_when_fal_client_is_not_importable(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys
        sys.modules["fal_client"] = None  # import fal_client now raises ImportError
        sys.modules["fal"] = None  # and so does import fal
        """
    )
    pytester.makepyfile(
        """
        import json
        import urllib.request

        import pytest

        def test_raw_http_still_works(fal_mock):
            fal_mock.on_run("fal-ai/x", {"n": 1})
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            req = urllib.request.Request(fal_mock.url + "/run/fal-ai/x", data=b"{}", method="POST")
            with opener.open(req) as resp:
                assert json.loads(resp.read()) == {"n": 1}
            with pytest.raises(ImportError):
                import fal_client  # noqa: F401
            with pytest.raises(ImportError):
                import fal.apps  # noqa: F401

        def test_and_the_guard_has_nothing_to_guard(pytestconfig):
            from pytest_falmock.plugin import GUARD_KEY

            assert not pytestconfig.stash[GUARD_KEY].running  # no client, no guard server
        """
    )
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("missing", ["RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "CDN_URL", "REST_URL"])
def test_a_missing_constant_fails_loudly_and_names_it(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.delattr(fc, missing)
    before = {name: getattr(fc, name) for name in ORIGINAL if name != missing}
    patch = ClientRedirect.for_test("http://127.0.0.1:1")

    with pytest.raises(FalClientPatchError, match=missing) as excinfo:
        patch.apply()

    assert "refuses to let the test reach the real fal.ai" in str(excinfo.value)
    assert "patch_client=False" in str(excinfo.value)
    assert not patch.active
    assert {name: getattr(fc, name) for name in before} == before
    assert os.environ.get("FAL_KEY") != DUMMY_FAL_KEY


def test_a_missing_constant_errors_the_test_at_setup(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import fal_client.client as fc
        del fc.CDN_URL
        """
    )
    pytester.makepyfile(
        """
        def test_never_runs(fal_mock):
            raise AssertionError("the body must not run")
        """
    )
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*FalClientPatchError: fal_client.client has no CDN_URL*"])


def test_patch_apply_and_undo_are_idempotent() -> None:
    patch = ClientRedirect.for_test("http://127.0.0.1:1/")
    assert patch.apply() is True
    assert patch.apply() is True
    assert fc.RUN_URL_FORMAT == "http://127.0.0.1:1/fal/run/"
    patch.undo()
    patch.undo()
    assert {name: getattr(fc, name) for name in ORIGINAL} == ORIGINAL


def test_the_sync_clients_connection_is_kept_between_tests_of_one_mock(pytester: pytest.Pytester) -> None:
    """Rebuilding fal_client's httpx client costs an SSL context per test: one mock keeps it
    (built with the dummy key), never one built with a key the test set."""
    pytester.makepyfile(
        """
        import fal_client

        SEEN = []

        def run(fal_mock):
            fal_mock.on_run("fal-ai/x", {"n": 1})
            assert fal_client.run("fal-ai/x", {}) == {"n": 1}
            SEEN.append(fal_client.sync_client.__dict__["_client"])

        def test_1(fal_mock):
            run(fal_mock)

        def test_2_reuses_it(fal_mock):
            run(fal_mock)
            assert SEEN[1] is SEEN[0]

        def test_3_outside_a_mocked_test_it_is_gone():
            assert "_client" not in fal_client.sync_client.__dict__

        def test_4_a_key_of_its_own(fal_mock, monkeypatch):
            for cached in ("_auth", "_client"):  # as in a session's first test
                fal_client.sync_client.__dict__.pop(cached)
            monkeypatch.setenv("FAL_KEY", "own-key")
            run(fal_mock)
            assert SEEN[2] is not SEEN[0]

        def test_5_gets_a_fresh_client(fal_mock):
            run(fal_mock)
            assert SEEN[3] is not SEEN[2]
        """
    )
    pytester.runpytest(*QUIET, "-p", "no:randomly").assert_outcomes(passed=5)


def test_a_client_kept_for_a_mock_that_is_gone_is_closed() -> None:
    with FalMock() as first, FalMock() as second:
        first.on_run("fal-ai/x", {"n": 1})
        patch = ClientRedirect.for_test(first.base_url)
        patch.apply()
        assert fal_client.run("fal-ai/x", {}) == {"n": 1}
        kept = fal_client.sync_client.__dict__["_client"]
        patch.undo()
        other = ClientRedirect.for_test(second.base_url)
        other.apply()
        other.undo()
        assert kept.is_closed
        assert "_client" not in fal_client.sync_client.__dict__


def test_the_session_guard_sits_below_every_test() -> None:
    assert ORIGINAL["RUN_URL_FORMAT"].startswith("http://127.0.0.1:")  # not https://fal.run/
    assert ORIGINAL["RUN_URL_FORMAT"].endswith("/fal/run/")


def test_redirects_stack_and_may_be_undone_in_any_order() -> None:
    below = ClientRedirect.for_test("http://127.0.0.1:1")
    above = ClientRedirect.for_test("http://127.0.0.1:2")
    assert below.apply()
    assert above.apply()
    assert fc.RUN_URL_FORMAT == "http://127.0.0.1:2/fal/run/"
    assert above.patched == {"fal_client.client", "fal.apps"} or above.patched == {"fal_client.client"}

    below.undo()  # out of order: the one above stays in force
    assert fc.RUN_URL_FORMAT == "http://127.0.0.1:2/fal/run/"
    assert (below.active, above.active) == (False, True)
    above.undo()
    assert {name: getattr(fc, name) for name in ORIGINAL} == ORIGINAL
    assert os.environ.get("FAL_KEY") != DUMMY_FAL_KEY


def test_credential_lookups_never_read_login_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_FORCE_AUTH_BY_USER", "1")  # would refresh a `fal auth login` token
    assert fc.fetch_auth_credentials().header_value == f"Key {DUMMY_FAL_KEY}"  # the guard's answer


def test_a_watched_module_is_handed_over_right_after_its_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "falmock_probe_module.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "falmock_probe_module", raising=False)
    seen: list[tuple[str, int]] = []

    def patch(name: str, module: object) -> None:
        seen.append((name, module.VALUE))  # type: ignore[attr-defined]
        module.VALUE += 1  # type: ignore[attr-defined]

    watch(["falmock_probe_module"], patch)
    import falmock_probe_module  # type: ignore[import-not-found]

    assert seen == [("falmock_probe_module", 41)]
    assert falmock_probe_module.VALUE == 42
    assert type(falmock_probe_module.__loader__).__name__ == "SourceFileLoader"  # no wrapper left
    assert falmock_probe_module.__spec__.loader is falmock_probe_module.__loader__
    monkeypatch.delitem(sys.modules, "falmock_probe_module")


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ("", "127.0.0.1,localhost"),
        ("internal.example", "internal.example,127.0.0.1,localhost"),
        ("localhost, internal.example", "localhost, internal.example,127.0.0.1"),
    ],
)
def test_no_proxy_keeps_what_is_there(current: str, expected: str) -> None:
    assert no_proxy_value(current, ("127.0.0.1", "localhost", "127.0.0.1")) == expected
