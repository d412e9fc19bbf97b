"""``FalMock``: the public face of the mock, used by the fixture and on its own."""

from __future__ import annotations

import json
import os
import re
import sys
from http import HTTPStatus
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Type, Union

from . import _routing as routing
from ._control import Control
from ._diagnostics import calls_message, unmatched_message
from ._engine import Engine
from ._fixture_files import load_path, parse_document
from ._fixtures import Fixture, InputMatcher, ModelSpec, Route, describe_model, model_spec
from ._options import QueueConfig, queue_config
from ._payloads import constant, image_renderer, video_renderer
from ._records import FalRequest, UnmatchedRequest, Upload, WebhookDelivery
from ._server import DEFAULT_MAX_BODY, FalMockServer
from ._stores import DEFAULT_MAX_JOBS, Stores
from ._webhooks import WebhookSender

COUNTED_ROUTES = (routing.QUEUE_SUBMIT, routing.RUN, routing.RUN_STREAM)


def _caller() -> str:
    """``file.py:line`` of the first frame outside this package (where a fixture was registered)."""
    frame: Optional[FrameType] = sys._getframe(1)
    package = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == package:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _json_ready(payload: Any, where: str) -> None:
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: the payload must be JSON-serialisable: {exc}") from None


class FalMock:
    """A local stand-in for fal.ai, served over HTTP on 127.0.0.1.

    Use it through the ``fal_mock`` pytest fixture, or on its own::

        with FalMock() as mock:
            mock.on_queue("fal-ai/flux/dev", {"images": [{"url": "https://x/cat.png"}]})
            ...  # point a client at mock.url
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote_webhooks: bool = False,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._stores = Stores(max_jobs=max_jobs)
        self._engine = Engine(self._stores)
        self._server = FalMockServer(self._engine, host, port, max_body=max_body)
        #: The control API under /__falmock/ (health, fixtures, reset, requests).
        self._control = Control(self)
        self._server.control = self._control
        self._allow_remote_webhooks = allow_remote_webhooks
        self._stores.allow_remote_webhooks = allow_remote_webhooks
        self._webhooks = WebhookSender(self._stores)
        self._engine.completion_listeners.append(self._webhooks.job_completed)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FalMock:
        """Start serving (idempotent); returns ``self``."""
        if not self._server.is_running():
            self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and wait for pending webhook deliveries (idempotent)."""
        if self._server.is_running():
            self._server.stop()
        self._webhooks.drain()

    def __enter__(self) -> FalMock:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self._server.is_running()

    @property
    def base_url(self) -> str:
        """The server root, ``http://127.0.0.1:<port>``."""
        return self._server.base_url

    @property
    def url(self) -> str:
        """The proxy base, ``http://127.0.0.1:<port>/fal`` (``withProxy({targetUrl})``)."""
        return self.base_url + "/fal"

    @property
    def port(self) -> int:
        return self._server.port

    def __repr__(self) -> str:
        state = self.url if self.is_running() else "stopped"
        return f"<FalMock {state}>"

    def reset(self) -> None:
        """Forget per-test fixtures, jobs, the journal, uploads and webhooks; keep file fixtures.

        Work still under way for the previous test (a slow request, a webhook delivery) records
        nothing once the reset is done.
        """
        self._stores.reset()
        self._stores.allow_remote_webhooks = self._allow_remote_webhooks
        self._server.internal_errors.clear()

    # -- registering responses ----------------------------------------------------------
    def _add(
        self,
        helper: str,
        model: Union[str, re.Pattern[str]],
        render: Callable[[Any], Any],
        *,
        status: int = 200,
        route: Optional[Route] = None,
        match_input: InputMatcher = None,
        times: Optional[int] = None,
        latency: float = 0.0,
        error_type: Optional[str] = None,
        events: Optional[Sequence[Any]] = None,
    ) -> None:
        where = f"fal_mock.{helper}()"
        spec: ModelSpec = model_spec(model, where)
        if route not in (None, "queue", "run"):
            raise ValueError(f"{where}: route must be 'queue', 'run' or None, got {route!r}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"{where}: times must be a positive integer, got {times!r}")
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
            raise ValueError(f"{where}: latency must be a non-negative number of seconds, got {latency!r}")
        if match_input is not None and not callable(match_input) and not isinstance(match_input, Mapping):
            raise TypeError(f"{where}: match_input must be a dict or a callable, got {match_input!r}")
        extras = [f"route={route!r}"] if route else []
        if times is not None:
            extras.append(f"times={times}")
        label = f"{helper}({', '.join([describe_model(spec), *extras])}) at {_caller()}"
        fixture = Fixture(
            model=spec,
            render=render,
            label=label,
            status=status,
            route=route,
            match_input=match_input,
            times=times,
            latency=float(latency),
            error_type=error_type,
            events=events,
        )
        self._stores.add_fixture(fixture)

    def on_queue(
        self,
        model: Union[str, re.Pattern[str]],
        payload: Any,
        *,
        route: Optional[Route] = None,
        match_input: InputMatcher = None,
        times: Optional[int] = None,
        latency: float = 0.0,
    ) -> None:
        """Answer requests for ``model`` with ``payload``, the exact JSON body fal returns."""
        _json_ready(payload, "fal_mock.on_queue()")
        self._add(
            "on_queue",
            model,
            constant(payload),
            route=route,
            match_input=match_input,
            times=times,
            latency=latency,
        )

    def on_run(
        self,
        model: Union[str, re.Pattern[str]],
        payload: Any,
        *,
        route: Optional[Route] = None,
        match_input: InputMatcher = None,
        times: Optional[int] = None,
        latency: float = 0.0,
    ) -> None:
        """Same as :meth:`on_queue`, named for synchronous runs."""
        _json_ready(payload, "fal_mock.on_run()")
        self._add(
            "on_run",
            model,
            constant(payload),
            route=route,
            match_input=match_input,
            times=times,
            latency=latency,
        )

    def on_image(
        self,
        model: Union[str, re.Pattern[str]],
        payload: Mapping[str, Any],
        *,
        route: Optional[Route] = None,
        match_input: InputMatcher = None,
        times: Optional[int] = None,
        latency: float = 0.0,
    ) -> None:
        """An image response in fal's shape; missing fields get defaults (see README)."""
        _json_ready(payload, "fal_mock.on_image()")
        self._add(
            "on_image",
            model,
            image_renderer(payload),
            route=route,
            match_input=match_input,
            times=times,
            latency=latency,
        )

    def on_video(
        self,
        model: Union[str, re.Pattern[str]],
        payload: Mapping[str, Any],
        *,
        route: Optional[Route] = None,
        match_input: InputMatcher = None,
        times: Optional[int] = None,
        latency: float = 0.0,
    ) -> None:
        """A video response in fal's shape; missing fields get defaults (see README)."""
        _json_ready(payload, "fal_mock.on_video()")
        self._add(
            "on_video",
            model,
            video_renderer(payload),
            route=route,
            match_input=match_input,
            times=times,
            latency=latency,
        )

    def on_error(
        self,
        model: Union[str, re.Pattern[str]],
        status: int = 422,
        detail: Any = None,
        error_type: Optional[str] = None,
        times: Optional[int] = None,
        *,
        route: Optional[Route] = None,
        match_input: InputMatcher = None,
        latency: float = 0.0,
    ) -> None:
        """Fail requests for ``model``: a queue job completes with an error, a run answers it.

        The error body is ``{"detail": detail}``; ``detail`` defaults to a FastAPI-style
        validation list for 422 and to the HTTP reason phrase otherwise.
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(
                f"fal_mock.on_error(): status must be an HTTP error code 400-599, got {status!r}"
            )
        if detail is None:
            if status == 422:
                detail = [{"loc": ["body"], "msg": "Validation error (fal_mock)", "type": "value_error"}]
            else:
                detail = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        _json_ready(detail, "fal_mock.on_error()")
        self._add(
            "on_error",
            model,
            constant({"detail": detail}),
            status=status,
            route=route,
            match_input=match_input,
            times=times,
            latency=latency,
            error_type=error_type,
        )

    def on_stream(
        self,
        model: Union[str, re.Pattern[str]],
        events: Iterable[Any],
        *,
        match_input: InputMatcher = None,
        times: Optional[int] = None,
        latency: float = 0.0,
    ) -> None:
        """Serve ``POST .../{model}/stream`` as ``text/event-stream``, one ``data:`` event each."""
        items = list(events)
        _json_ready(items, "fal_mock.on_stream()")
        self._add(
            "on_stream",
            model,
            constant(items[-1] if items else None),
            match_input=match_input,
            times=times,
            latency=latency,
            events=items,
        )

    def load_fixtures(self, path: Union[str, Path]) -> int:
        """Load a fixture file (or a directory of ``*.json``) for the whole session."""
        fixtures = load_path(Path(path))
        self._add_session_fixtures(fixtures)
        return len(fixtures)

    def add_fixture_document(self, document: Any, source: str = "fixtures") -> int:
        """Add session fixtures from an already-parsed ``{"fixtures": [...]}`` document."""
        fixtures = parse_document(document, source)
        self._add_session_fixtures(fixtures)
        return len(fixtures)

    # -- polling realism ----------------------------------------------------------------
    def queue(self, **kwargs: Any) -> None:
        """Set polling realism for jobs submitted from now on (same keywords as ``fal_queue``)."""
        self._stores.queue_config = queue_config("fal_mock.queue()", (), **kwargs)

    # -- inspecting ---------------------------------------------------------------------
    @property
    def requests(self) -> list[FalRequest]:
        """The journal: every request the mock received since the last reset, in order."""
        return self._stores.snapshot(self._stores.journal)

    @property
    def uploads(self) -> list[Upload]:
        return self._stores.snapshot(self._stores.uploads.values())

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        self._webhooks.drain()
        return self._stores.snapshot(self._stores.webhooks)

    @property
    def unmatched(self) -> list[UnmatchedRequest]:
        return self._stores.snapshot(self._stores.unmatched)

    def assert_called(self, model: Union[str, re.Pattern[str]], times: Optional[int] = None) -> None:
        """Assert submits, runs and streams for ``model`` were made (exactly ``times`` if given)."""
        __tracebackhide__ = True
        spec = model_spec(model, "fal_mock.assert_called()")

        def hit(request: FalRequest) -> bool:
            if request.model is None:
                return False
            if isinstance(spec, str):
                return request.model == spec
            return spec.search(request.model) is not None

        made = [r for r in self.requests if r.route in COUNTED_ROUTES]
        calls = [r for r in made if hit(r)]
        if (times is None and calls) or (times is not None and len(calls) == times):
            return
        others = [r for r in made if not hit(r)]
        shown = describe_model(spec) + (f", times={times}" if times is not None else "")
        raise AssertionError(calls_message(shown, times, calls, others))

    def check(self) -> None:
        """Raise ``AssertionError`` if a request matched no fixture or the server hit a bug."""
        __tracebackhide__ = True
        problems = self.problems(allow_unmatched=False)
        if problems:
            raise AssertionError(problems)

    def blocked_webhooks(self) -> list[WebhookDelivery]:
        """Webhooks refused because their URL is not loopback (recorded at once: no waiting)."""
        return [d for d in self._stores.snapshot(self._stores.webhooks) if d.outcome == "blocked"]

    def problems(self, *, allow_unmatched: bool) -> str:
        """The teardown report: unmatched requests (unless allowed) and internal errors."""
        parts = []
        unmatched = self.unmatched
        if unmatched and not allow_unmatched:
            parts.append(unmatched_message(unmatched))
        errors = list(self._server.internal_errors)
        if errors:
            parts.append(
                "fal_mock: the mock server hit an internal error (please report it):\n" + "\n".join(errors)
            )
        return "\n\n".join(parts)

    # -- plugin hooks (private) ---------------------------------------------------------
    def _add_session_fixtures(self, fixtures: Iterable[Fixture]) -> None:
        for fixture in fixtures:
            self._stores.add_fixture(fixture, session=True)

    def _configure(self, *, queue: Optional[QueueConfig], allow_remote_webhooks: bool) -> None:
        if queue is not None:
            self._stores.queue_config = queue
        self._stores.allow_remote_webhooks = allow_remote_webhooks or self._allow_remote_webhooks
