"""The seams of the house: a closed set of routes with one handler each, and one settings value."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from httpclient import http

from pytest_falmock import FalMock, FalMockUsageError
from pytest_falmock._jobs import QueueConfig
from pytest_falmock._operation import ROUTES
from pytest_falmock._server import FalMockServer
from pytest_falmock._settings import Settings

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_falmock"


def test_every_route_routing_can_produce_has_a_handler() -> None:
    mock = FalMock()
    assert set(mock._server.handlers) == set(ROUTES)


def test_a_server_without_a_handler_for_every_route_is_refused() -> None:
    table = {route: (lambda op: None) for route in ROUTES if route != "queue.cancel"}
    with pytest.raises(ValueError, match=r"no handler for the routes queue\.cancel"):
        FalMockServer(table, lambda *args: None)  # type: ignore[arg-type]


def test_the_front_ends_use_no_private_attribute_of_the_core() -> None:
    for name in ("plugin.py", "cli.py", "_record.py", "_control.py"):
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        private = [
            f"{name}:{node.lineno} .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ]
        assert private == []


def test_no_module_hard_codes_the_route_prefix() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name != "_urls.py":
            assert '"/fal' not in path.read_text(encoding="utf-8"), path.name


def test_session_settings_come_back_after_every_reset() -> None:
    with FalMock(settings=Settings(queue=QueueConfig(0, 2)), allow_remote_webhooks=True) as mock:
        mock.on_queue("fal-ai/x", {"ok": 1})
        mock.configure(queue=QueueConfig(0, 0), allow_unmatched=True)
        assert (mock.settings.queue, mock.settings.allow_unmatched) == (QueueConfig(0, 0), True)
        mock.reset()
        assert mock.settings == Settings(queue=QueueConfig(0, 2), allow_remote_webhooks=True)
        mock.on_queue("fal-ai/x", {"ok": 1})
        envelope = http("POST", f"{mock.url}/queue/fal-ai/x", {}).json
        assert http("GET", envelope["status_url"]).json["status"] == "IN_PROGRESS"


def test_configure_validates_like_the_marker() -> None:
    mock = FalMock()
    with pytest.raises(FalMockUsageError, match=r"fal_mock\.configure\(\): unknown keyword 'allow'"):
        mock.configure(allow=True)
    with pytest.raises(FalMockUsageError, match="patch_client must be True or False"):
        mock.configure(patch_client="no")
    with pytest.raises(TypeError, match="queue must be a QueueConfig"):
        mock.configure(queue=3)
    with pytest.raises(FalMockUsageError, match="max_jobs is a session setting"):
        mock.settings.override(max_jobs=3)
    assert mock.settings == Settings()


def test_a_helper_typo_is_a_type_error_naming_the_helper() -> None:
    mock = FalMock()
    with pytest.raises(TypeError, match=r"fal_mock\.on_run\(\) got an unexpected keyword argument 'tims'"):
        mock.on_run("fal-ai/x", {}, tims=2)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"fal_mock\.on_stream\(\) got an unexpected keyword argument 'route'"
    ):
        mock.on_stream("fal-ai/x", [], route="run")  # type: ignore[call-arg]
