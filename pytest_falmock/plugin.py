"""pytest glue: options, ini, markers, the ``fal_mock`` fixture and its teardown check."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import pytest

from ._clients import ClientRedirect
from ._clients._guard import Guard, refusal
from ._coexist import spare_fal_mock
from ._errors import FalMockUsageError, FalMockWarning
from ._fixture_files import FixtureFileError, load_path
from ._mock import FalMock
from ._record import recorder_for
from ._secrets import Credentials
from ._settings import (
    RECORD_MODES,
    RecordSettings,
    Settings,
    allowed_hosts,
    marker_overrides,
    parse_size,
    queue_config,
    record_settings,
)
from ._stubs import Stub

STUBS_KEY = pytest.StashKey[List[Stub]]()
RECORD_KEY = pytest.StashKey[RecordSettings]()
GUARD_KEY = pytest.StashKey[Guard]()
SERVER_KEY = pytest.StashKey[FalMock]()
#: Refused calls no test or collector could answer for (reported at the end of the run).
LEFTOVER_KEY = pytest.StashKey[str]()
HOSTS_KEY = pytest.StashKey[Tuple[str, ...]]()
#: xdist: the controller tells its workers whether the record target existed at session start.
TARGET_EXISTED = "falmock_record_target_existed"

MARKERS = (
    "fal_mock(allow_unmatched=False, patch_client=True, allow_remote_webhooks=False, "
    "virtual_time=True): switch on the fal_mock fixture for this test and tune it "
    "(virtual_time=False: fal_client's polls, retries and timeouts wait on the wall clock).",
    "fal_queue(polls=None, polls_before_in_progress=None, polls_before_completed=None): "
    "polling realism for fal queue jobs submitted in this test (switches on fal_mock).",
    "fal_real: let this test call the real fal.ai (the fal_mock guard refuses fal calls made "
    "outside tests that use fal_mock).",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("falmock", "fal.ai mock (pytest-falmock)")
    group.addoption(
        "--fal-fixtures",
        action="append",
        default=[],
        metavar="PATH",
        help="JSON fixture file, or directory of *.json files, loaded for the whole session "
        "(repeatable; relative to the invocation directory).",
    )
    parser.addini(
        "fal_fixtures",
        type="paths",
        default=[],
        help="fal fixture files or directories (relative to the ini file).",
    )
    group.addoption(
        "--fal-record-mode",
        choices=RECORD_MODES,
        default="none",
        help="none (default): never touch the network; new: forward requests no fixture matches "
        "upstream and record them; once: record only if the fixture file did not exist at session "
        "start; all: forward everything, replacing recorded entries. Needs --fal-fixtures PATH.",
    )
    group.addoption(
        "--fal-record",
        action="store_const",
        const="new",
        dest="fal_record_mode",
        help="Same as --fal-record-mode=new.",
    )
    group.addoption(
        "--fal-upstream",
        metavar="URL",
        default=None,
        help="Record against URL instead of the real fal hosts (each request carries x-fal-target-host).",
    )
    parser.addini("fal_upstream", default="", help="Default for --fal-upstream.")
    group.addoption(
        "--fal-record-media-max",
        metavar="SIZE",
        default="50MiB",
        help="While recording, download media files up to SIZE (bytes, or e.g. 200MiB; 0: none) "
        "next to the fixture file, so replays serve them offline; larger ones keep their URL, "
        "with a warning. Default 50MiB.",
    )
    parser.addini(
        "fal_guard",
        type="bool",
        default=True,
        help="Refuse fal calls (fal_client, fal) made outside tests that use fal_mock (default true).",
    )
    parser.addini(
        "fal_allow_hosts",
        type="linelist",
        default=[],
        help="Host names (besides localhost and loopback addresses) the mock answers in the Host "
        "header, e.g. the name a browser in another container uses.",
    )


def fixture_paths(config: pytest.Config) -> list[Path]:
    """Ini paths first, then command-line paths (the order fixtures are tried in)."""
    paths = [Path(p) for p in config.getini("fal_fixtures")]
    base = config.invocation_params.dir
    paths.extend(base / p for p in config.getoption("fal_fixtures"))
    return paths


def _record_settings(config: pytest.Config) -> RecordSettings:
    """Resolve the record options; the credentials are read now, before any test patches them."""
    targets = fixture_paths(config)  # the record target is the last one: CLI paths come after ini ones
    upstream = config.getoption("fal_upstream") or str(config.getini("fal_upstream") or "") or None
    existed: Optional[bool] = getattr(config, "workerinput", {}).get(TARGET_EXISTED)
    try:
        return record_settings(
            config.getoption("fal_record_mode"),
            targets,
            upstream,
            where="--fal-record-mode/--fal-upstream",
            fixtures_option="--fal-fixtures",
            credentials=Credentials.from_env(),
            target_existed=existed,
            media_max=parse_size(config.getoption("fal_record_media_max"), "--fal-record-media-max"),
        )
    except FalMockUsageError as exc:
        raise pytest.UsageError(str(exc)) from None


# -- the guard ----------------------------------------------------------------------------------
def _arm_guard(config: pytest.Config) -> None:
    if GUARD_KEY in config.stash or not config.getini("fal_guard"):
        return
    guard = config.stash[GUARD_KEY] = Guard()
    guard.arm()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Arm the guard before the first conftest is imported (a fal call there is refused too)."""
    _arm_guard(early_config)


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(GUARD_KEY, None)
    if guard is not None:
        guard.disarm()


def _answer_for_guarded_calls(
    config: pytest.Config, report: Union[pytest.TestReport, pytest.CollectReport]
) -> None:
    """Fail ``report`` with the guard's message if fal calls were refused while it was made."""
    guard = config.stash.get(GUARD_KEY, None)
    if guard is None or not guard.pending:
        return
    message = refusal(*guard.take())
    if report.failed:
        if message not in str(report.longrepr):
            report.sections.append(("fal_mock guard", message))
        return
    report.outcome = "failed"
    report.longrepr = message
    if hasattr(report, "wasxfail"):
        del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    _answer_for_guarded_calls(item.config, outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _answer_for_guarded_calls(collector.config, outcome.get_result())  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    guard = session.config.stash.get(GUARD_KEY, None)
    if guard is not None and guard.pending:
        session.config.stash[LEFTOVER_KEY] = refusal(*guard.take())
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    leftover = config.stash.get(LEFTOVER_KEY, None)
    if leftover:
        terminalreporter.write_sep("=", "fal_mock guard", red=True)
        terminalreporter.write_line(f"outside any test: {leftover}")


@pytest.fixture
def _fal_real(request: pytest.FixtureRequest) -> Iterator[None]:
    """``@pytest.mark.fal_real``: the guard steps aside for this test."""
    guard = request.config.stash.get(GUARD_KEY, None)
    if guard is None:
        yield
        return
    guard.lift()
    try:
        yield
    finally:
        guard.arm()


# -- configuration -----------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    _arm_guard(config)  # when the plugin was loaded too late for pytest_load_initial_conftests
    record = config.stash[RECORD_KEY] = _record_settings(config)
    try:
        hosts = allowed_hosts(config.getini("fal_allow_hosts"), "ini option fal_allow_hosts")
        config.stash[HOSTS_KEY] = hosts
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if record.active and record.upstream is None and not record.credentials.key:
        config.issue_config_time_warning(
            FalMockWarning(
                "fal_mock is recording against the real fal.ai, but FAL_KEY (or FAL_KEY_ID and "
                "FAL_KEY_SECRET) is not set: requests without their own Authorization go upstream "
                "unauthenticated, and a 401 answer would be recorded as an error entry."
            ),
            stacklevel=2,
        )
    stubs: list[Stub] = []
    try:
        for path in fixture_paths(config):
            if record.recording and path == record.target and not path.exists():
                continue  # the record target is created on first write
            stubs.extend(load_path(path))
    except FixtureFileError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STUBS_KEY] = stubs


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: workers judge ``once`` by the target as it was at session start."""
    node.workerinput[TARGET_EXISTED] = node.config.stash[RECORD_KEY].target_existed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The markers alone switch the fixtures on; other HTTP mocks leave the fal mock alone."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if item.get_closest_marker("fal_real") and "_fal_real" not in item.fixturenames:
            item.fixturenames.insert(0, "_fal_real")
        if "fal_mock" in item.fixturenames:
            continue
        if item.get_closest_marker("fal_mock") or item.get_closest_marker("fal_queue"):
            item.fixturenames.append("fal_mock")

    def base_url() -> Optional[str]:
        mock = config.stash.get(SERVER_KEY, None)
        return None if mock is None else mock.base_url

    spare_fal_mock(items, base_url)


@pytest.fixture(scope="session")
def fal_mock_server(pytestconfig: pytest.Config) -> Iterator[FalMock]:
    """The session's one mock server (per xdist worker), started on first use."""
    settings = Settings(
        record=pytestconfig.stash[RECORD_KEY], test_stubs=False, allow_hosts=pytestconfig.stash[HOSTS_KEY]
    )
    mock = FalMock(settings=settings, upstream=recorder_for(settings.record))
    stubs: list[Stub] = pytestconfig.stash[STUBS_KEY]
    mock.add_session_stubs(stubs)
    with mock:
        pytestconfig.stash[SERVER_KEY] = mock
        try:
            yield mock
        finally:
            del pytestconfig.stash[SERVER_KEY]


def _marker_overrides(node: pytest.Item) -> dict[str, Any]:
    """The settings the test's markers override (farthest marker first, closest wins)."""
    overrides: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers("fal_mock"))):
        overrides.update(marker_overrides("@pytest.mark.fal_mock", marker.args, marker.kwargs))
    queue = node.get_closest_marker("fal_queue")
    if queue is not None:
        overrides["queue"] = queue_config("@pytest.mark.fal_queue", queue.args, **queue.kwargs)
    return overrides


@pytest.fixture
def fal_mock(request: pytest.FixtureRequest, fal_mock_server: FalMock) -> Iterator[FalMock]:
    """A fresh fal.ai mock for this test: per-test stubs, jobs and journal start empty."""
    mock = fal_mock_server
    try:
        overrides = _marker_overrides(request.node)
    except FalMockUsageError as exc:
        usage_error = str(exc)
    else:
        usage_error = ""
    if usage_error:
        pytest.fail(usage_error, pytrace=False)
    mock.reset()
    mock.configure(test_stubs=True, **overrides)
    redirect = ClientRedirect.for_test(mock.base_url, mock.clock if mock.settings.virtual_time else None)
    if mock.settings.patch_client:
        redirect.apply()
    try:
        yield mock
    finally:
        redirect.undo()
    for note in mock.take_warnings():
        warnings.warn(FalMockWarning(note), stacklevel=1)
    for blocked in mock.blocked_webhooks():
        warnings.warn(
            FalMockWarning(
                f"fal_mock: the webhook of request {blocked.request_id} to {blocked.url} was not "
                f"delivered: {blocked.error}"
            ),
            stacklevel=1,
        )
    problems = mock.problems()
    mock.reset()
    if problems:
        pytest.fail(problems, pytrace=False)
