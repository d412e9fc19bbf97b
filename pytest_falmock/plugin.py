"""pytest glue: options, ini, markers, the ``fal_mock`` fixture and its teardown check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List

import pytest

from ._client_patch import FalClientPatch
from ._fixture_files import FixtureFileError, load_path
from ._fixtures import Fixture
from ._mock import FalMock
from ._options import FalMockUsageError, MockOptions, mock_options, queue_config

FIXTURES_KEY = pytest.StashKey[List[Fixture]]()

MARKERS = (
    "fal_mock(allow_unmatched=False, patch_client=True, allow_remote_webhooks=False): "
    "switch on the fal_mock fixture for this test and tune it.",
    "fal_queue(polls=None, polls_before_in_progress=None, polls_before_completed=None): "
    "polling realism for fal queue jobs submitted in this test (switches on fal_mock).",
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


def fixture_paths(config: pytest.Config) -> list[Path]:
    """Ini paths first, then command-line paths (the order fixtures are tried in)."""
    paths = [Path(p) for p in config.getini("fal_fixtures")]
    base = config.invocation_params.dir
    paths.extend(base / p for p in config.getoption("fal_fixtures"))
    return paths


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    fixtures: list[Fixture] = []
    try:
        for path in fixture_paths(config):
            fixtures.extend(load_path(path))
    except FixtureFileError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[FIXTURES_KEY] = fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The markers alone switch the fixture on."""
    for item in items:
        if not isinstance(item, pytest.Function) or "fal_mock" in item.fixturenames:
            continue
        if item.get_closest_marker("fal_mock") or item.get_closest_marker("fal_queue"):
            item.fixturenames.append("fal_mock")


@pytest.fixture(scope="session")
def fal_mock_server(pytestconfig: pytest.Config) -> Iterator[FalMock]:
    """The session's one mock server (per xdist worker), started on first use."""
    mock = FalMock()
    session_fixtures: List[Fixture] = pytestconfig.stash[FIXTURES_KEY]
    mock._add_session_fixtures(session_fixtures)
    with mock:
        yield mock


def _marker_settings(node: pytest.Item) -> tuple[MockOptions, Any]:
    kwargs: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers("fal_mock"))):
        mock_options("@pytest.mark.fal_mock", marker.args, marker.kwargs)
        kwargs.update(marker.kwargs)
    options = mock_options("@pytest.mark.fal_mock", (), kwargs)
    queue = node.get_closest_marker("fal_queue")
    config = queue_config("@pytest.mark.fal_queue", queue.args, **queue.kwargs) if queue else None
    return options, config


@pytest.fixture
def fal_mock(request: pytest.FixtureRequest, fal_mock_server: FalMock) -> Iterator[FalMock]:
    """A fresh fal.ai mock for this test: per-test fixtures, jobs and journal start empty."""
    mock = fal_mock_server
    try:
        options, config = _marker_settings(request.node)
    except FalMockUsageError as exc:
        usage_error = str(exc)
    else:
        usage_error = ""
    if usage_error:
        pytest.fail(usage_error, pytrace=False)
    mock.reset()
    mock._configure(queue=config, allow_remote_webhooks=options.allow_remote_webhooks)
    patch = FalClientPatch(mock.base_url)
    if options.patch_client:
        patch.apply()
    try:
        yield mock
    finally:
        patch.undo()
    problems = mock.problems(allow_unmatched=options.allow_unmatched)
    mock.reset()
    if problems:
        pytest.fail(problems, pytrace=False)
