"""``FalMock``: the public face of the mock, used by the fixture, the CLI and on its own."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from http import HTTPStatus
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, Type, TypedDict, Union

from ._blob import BytesBlob
from ._clients._startup import child_environment
from ._clock import Clock, check_seconds
from ._control import Control
from ._diagnostics import calls_message, handler_errors_message, unmatched_message
from ._engine import Engine, RequestListener, Upstream
from ._errors import FalMockUsageError, FalMockWarning
from ._files import FileEntry, new_file_id, safe_name
from ._fixture_files import load_path, parse_document
from ._jobs import QueueConfig
from ._journal import FalRequest, ServedFile, UnmatchedRequest, Upload, WebhookDelivery
from ._net import exposure_warning
from ._payloads import constant, file_renderer, image_renderer, json_ready
from ._realtime import realtime_answer, realtime_error, websocket_answer
from ._routing import JournalRoute
from ._server import FalMockServer
from ._settings import Settings, marker_overrides, queue_config
from ._signing import WebhookSigner
from ._stores import Stores
from ._stubs import (
    InputMatcher,
    ModelSpec,
    OnlyKind,
    OptionError,
    Renderer,
    SocketAnswer,
    Stub,
    describe_model,
    make_stub,
    model_spec,
)
from ._urls import file_url, jwks_url, proxy_url
from ._webhooks import WebhookSender

if TYPE_CHECKING:
    from typing_extensions import Unpack

ModelArg = ModelSpec
#: Requests ``assert_called`` counts: the ones that ask a model for something.
COUNTED_ROUTES: frozenset[JournalRoute] = frozenset({"queue.submit", "run", "run.stream", "realtime.message"})


class _Matching(TypedDict, total=False):
    match_input: InputMatcher
    latency: float


class StreamOptions(_Matching, total=False):
    """Keywords of ``on_stream``."""

    times: Optional[int]


class ErrorOptions(_Matching, total=False):
    """Keywords of ``on_error`` besides its positional ones."""

    route: Optional[OnlyKind]


class StubOptions(StreamOptions, total=False):
    """Keywords of ``on_queue``, ``on_run``, ``on_image``, ``on_video`` and ``on_audio`` (see the README)."""

    route: Optional[OnlyKind]


def _caller() -> str:
    """``file.py:line`` of the first frame outside this package (where a stub was registered)."""
    frame: Optional[FrameType] = sys._getframe(1)
    package = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == package:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class FalMock:
    """A local stand-in for fal.ai, served over HTTP on 127.0.0.1.

    Use it through the ``fal_mock`` pytest fixture, or on its own::

        with FalMock() as mock:
            mock.on_queue("fal-ai/flux/dev", {"images": [{"url": "https://x/cat.png"}]})
            ...  # point a client at mock.url

    ``settings`` are the session defaults (keywords given here override them);
    :meth:`configure` changes them for one test and :meth:`reset` restores them. ``upstream``
    answers what no stub serves (record mode, see ``_record.py``). Time-based behaviour reads
    the mock's :attr:`clock`, which :meth:`advance` moves forward.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        settings: Optional[Settings] = None,
        upstream: Optional[Upstream] = None,
        allow_remote_webhooks: Optional[bool] = None,
        max_jobs: Optional[int] = None,
        max_body: Optional[int] = None,
        virtual_time: Optional[bool] = None,
        allow_hosts: Optional[Sequence[str]] = None,
    ) -> None:
        if not isinstance(host, str) or not host.strip():
            raise ValueError(
                f"FalMock(host={host!r}): name the interface to bind, e.g. 127.0.0.1 "
                "(an empty host would bind every interface)"
            )
        given: dict[str, Any] = {
            "allow_remote_webhooks": allow_remote_webhooks,
            "max_jobs": max_jobs,
            "max_body": max_body,
            "virtual_time": virtual_time,
            "allow_hosts": tuple(allow_hosts) if allow_hosts is not None else None,
        }
        defaults = settings if settings is not None else Settings()
        self._defaults = dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})
        self._settings = self._defaults
        self._stores = Stores(max_jobs=self._defaults.max_jobs, max_unmatched=self._defaults.max_unmatched)
        signer = WebhookSigner()  # one key per mock, made on first use
        self._clock = Clock()
        self._engine = Engine(self._stores, self._current_settings, self._clock, upstream, signer)
        self._webhooks = WebhookSender(self._stores, self._current_settings, signer)
        self._engine.completion_listeners.append(self._webhooks.job_completed)
        handlers = {route: self._engine.handle for route in self._engine.routes}
        handlers.update(Control(self).handlers)
        self._server = FalMockServer(
            handlers,
            self._engine.record_rejected,
            host,
            port,
            max_body=self._defaults.max_body,
            limits=self._defaults.connection_limits,
            allow_hosts=self._defaults.allow_hosts,
        )

    def _current_settings(self) -> Settings:
        return self._settings

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FalMock:
        """Start serving (idempotent); returns ``self``.

        Binding an address other than a loopback one warns (``FalMockWarning``): the mock is then
        reachable from other machines.
        """
        if not self._server.is_running():
            self._server.start()
            risk = exposure_warning(self._server.host, self.port)
            if risk:
                warnings.warn(FalMockWarning(risk), stacklevel=2)
        return self

    def stop(self) -> None:
        """Stop serving, wait for pending webhook deliveries and delete the temporary files of
        uploads (idempotent)."""
        if self._server.is_running():
            self._server.stop()
        self._webhooks.drain()
        self._stores.files.reset()

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
        return proxy_url(self.base_url)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def webhook_jwks_url(self) -> str:
        """The JWKS this mock's webhook signatures verify against - point the app's verifier here
        instead of ``https://rest.fal.ai/.well-known/jwks.json``."""
        return jwks_url(self.base_url)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that send a child process's fal calls to this mock:
        ``FAL_MOCK_URL``, a dummy ``FAL_KEY`` and ``NO_PROXY`` (use with
        ``env={**os.environ, **fal_mock.env}``; needs pytest-falmock in the child's environment)."""
        return child_environment(self.url)

    def __repr__(self) -> str:
        state = self.url if self.is_running() else "stopped"
        return f"<FalMock {state}>"

    # -- settings -----------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The settings in force now: the session defaults plus this test's overrides."""
        return self._settings

    def configure(self, **changes: Any) -> None:
        """Override settings until the next :meth:`reset`: the ``@pytest.mark.fal_mock`` keywords,
        ``queue=`` (a ``QueueConfig``) and ``test_stubs=`` (the fixture opens each test with it)."""
        queue = changes.pop("queue", None)
        test_stubs = changes.pop("test_stubs", None)
        overrides = marker_overrides("fal_mock.configure()", (), changes)
        if queue is not None:
            if not isinstance(queue, QueueConfig):
                raise TypeError(f"fal_mock.configure(): queue must be a QueueConfig, got {queue!r}")
            overrides["queue"] = queue
        if test_stubs is not None:
            if not isinstance(test_stubs, bool):
                raise TypeError(f"fal_mock.configure(): test_stubs must be True or False, got {test_stubs!r}")
            overrides["test_stubs"] = test_stubs
        self._settings = self._settings.override(**overrides)

    # -- time ---------------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        """The mock's clock (documented-internal): wall time plus the virtual offset that the
        patched clients' waits, run latency under virtual time and :meth:`advance` add to."""
        return self._clock

    def advance(self, seconds: float) -> None:
        """Move the mock's clock ``seconds`` forward: jobs' latency runs down, and a job left
        waiting only for time completes (its webhook fires). For apps that wait with their own
        sleeps, JS clients and the standalone server (``POST /__falmock/advance``)."""
        self._clock.advance(check_seconds(seconds, "fal_mock.advance()"))

    def queue(self, **kwargs: Any) -> None:
        """Set polling realism for jobs submitted from now on (same keywords as ``fal_queue``)."""
        self.configure(queue=queue_config("fal_mock.queue()", (), **kwargs))

    def reset(self) -> None:
        """Forget per-test stubs, jobs, the journal, uploads, added files and webhooks; keep
        session stubs (and their recorded media); restore the session settings.

        Work still under way for the previous test (a slow request, a webhook delivery) records
        nothing once the reset is done; its open WebSocket connections are closed (1001).
        """
        self._server.close_websockets()
        self._stores.reset()
        self._settings = self._defaults
        self._server.internal_errors.clear()

    # -- registering responses ----------------------------------------------------------
    def _register(
        self,
        helper: str,
        model: ModelArg,
        render: Renderer,
        options: Mapping[str, Any],
        *,
        status: int = 200,
        error_type: Optional[str] = None,
        events: Optional[list[Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        socket: Optional[SocketAnswer] = None,
    ) -> None:
        where = f"fal_mock.{helper}()"
        if not self._settings.test_stubs:
            raise FalMockUsageError(
                f"{where} was called outside a test, so its response would vanish at the next "
                "test's reset. For responses every test shares, use "
                'fal_mock_server.add_fixture_document({"fixtures": [...]}) or '
                "fal_mock_server.load_fixtures(path) (or --fal-fixtures); for one test, call "
                f"{helper}() inside a test that uses the fal_mock fixture."
            )
        allowed = StubOptions.__optional_keys__ if events is None else StreamOptions.__optional_keys__
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(f"{where} got an unexpected keyword argument {unknown[0]!r}")
        spec = model_spec(model, where)
        route = options.get("route")
        if route not in (None, "queue", "run"):
            raise ValueError(f"{where}: route must be 'queue', 'run' or None, got {route!r}")
        match_input = options.get("match_input")
        if match_input is not None and not callable(match_input) and not isinstance(match_input, Mapping):
            raise TypeError(f"{where}: match_input must be a dict or a callable, got {match_input!r}")
        times = options.get("times")
        extras = [f"route={route!r}"] if route else []
        if socket is not None and socket.protocol == "websocket" and socket.path:
            extras.append(f"path={socket.path!r}")
        if times is not None:
            extras.append(f"times={times}")
        label = f"{helper}({', '.join([describe_model(spec), *extras])}) at {_caller()}"
        try:
            stub = make_stub(
                spec,
                render,
                label,
                status=status,
                only_kind=route,
                match_input=match_input,
                times=times,
                latency=options.get("latency", 0.0),
                error_type=error_type,
                events=events,
                headers=headers,
                socket=socket,
            )
        except OptionError as exc:
            raise ValueError(f"{where}: {exc}") from None
        self._stores.add_stub(stub)

    def on_queue(self, model: ModelArg, payload: Any, **options: Unpack[StubOptions]) -> None:
        """Answer requests for ``model`` with ``payload``, the exact JSON body fal returns.

        Keywords: ``route`` ("queue" or "run"), ``match_input`` (dict subset or callable),
        ``times`` (serve N requests), ``latency`` (seconds).
        """
        self._register("on_queue", model, constant(json_ready(payload, "fal_mock.on_queue()")), options)

    def on_run(self, model: ModelArg, payload: Any, **options: Unpack[StubOptions]) -> None:
        """Same as :meth:`on_queue`, named for synchronous runs."""
        self._register("on_run", model, constant(json_ready(payload, "fal_mock.on_run()")), options)

    def on_image(self, model: ModelArg, payload: Mapping[str, Any], **options: Unpack[StubOptions]) -> None:
        """An image response in fal's shape; missing fields get defaults (see README)."""
        render = image_renderer(json_ready(payload, "fal_mock.on_image()"))
        self._register("on_image", model, render, options)

    def on_video(self, model: ModelArg, payload: Mapping[str, Any], **options: Unpack[StubOptions]) -> None:
        """A video response in fal's shape; missing fields get defaults (see README)."""
        render = file_renderer("on_video", "video", "video", json_ready(payload, "fal_mock.on_video()"))
        self._register("on_video", model, render, options)

    def on_audio(self, model: ModelArg, payload: Mapping[str, Any], **options: Unpack[StubOptions]) -> None:
        """An audio response in fal's shape, ``{"audio": {url, content_type, file_name, file_size}}``;
        missing fields get defaults, and without a ``url`` a short WAV served by the mock."""
        render = file_renderer("on_audio", "audio", "audio", json_ready(payload, "fal_mock.on_audio()"))
        self._register("on_audio", model, render, options)

    def on_error(
        self,
        model: ModelArg,
        status: int = 422,
        detail: Any = None,
        error_type: Optional[str] = None,
        times: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
        **options: Unpack[ErrorOptions],
    ) -> None:
        """Fail requests for ``model``: a queue job completes with an error, a run answers it.

        The error body is ``{"detail": detail}`` (plus ``"error_type"`` when given, also sent
        as ``x-fal-error-type``); ``detail`` defaults to a FastAPI-style validation list for
        422 and to the HTTP reason phrase otherwise. ``headers`` are extra response headers
        (e.g. ``{"X-Fal-Request-Timeout-Type": "user"}`` on a 504, ``{"Retry-After": "1"}``).
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
        if error_type is not None and not isinstance(error_type, str):
            raise TypeError(f"fal_mock.on_error(): error_type must be a str, got {error_type!r}")
        body = {"detail": json_ready(detail, "fal_mock.on_error()")}
        if error_type is not None:
            body["error_type"] = error_type
        self._register(
            "on_error",
            model,
            constant(body),
            {**options, "times": times},
            status=status,
            error_type=error_type,
            headers=headers,
        )

    def on_stream(self, model: ModelArg, events: Iterable[Any], **options: Unpack[StreamOptions]) -> None:
        """Serve stream requests for ``model`` as ``text/event-stream``, one ``data:`` event each.

        A stream request is a run that asks for ``Accept: text/event-stream`` (``fal_client.stream``
        on any ``path``, ``fal.stream``) or posts to ``.../{model}/stream``; ``model`` is the
        endpoint id without that ``/stream``. A run that accepts any type (``fal.apps.stream``)
        is served by a stream fixture when no run fixture matches it.
        """
        items = json_ready(list(events), "fal_mock.on_stream()")
        self._register("on_stream", model, constant(items[-1] if items else None), options, events=items)

    def on_realtime(
        self,
        model: ModelArg,
        reply: Any,
        *,
        times: Optional[int] = None,
        match_input: InputMatcher = None,
    ) -> None:
        """Answer each message on a realtime connection to ``model`` (``fal_client.realtime``,
        ``fal.realtime.connect``) with ``reply``, sent as msgpack:

        - a dict: sent for every message;
        - a list of dicts: one per message on each connection, in order (a message after the
          last one is unmatched: ``x-fal-error``, and the test fails);
        - a callable ``(message) -> dict | list[dict] | None``: a list sends several results,
          None sends nothing.

        ``times`` counts messages; ``match_input`` (dict subset or callable) tests each message.
        """
        answer = realtime_answer(reply, "fal_mock.on_realtime()")
        options = {"times": times, "match_input": match_input}
        self._register("on_realtime", model, constant(None), options, socket=answer)

    def on_realtime_error(self, model: ModelArg, error: str, reason: str = "") -> None:
        """Answer each message on a realtime connection to ``model`` with fal's error message
        ``{"type": "x-fal-error", "error": error, "reason": reason}`` (``RealtimeError`` in
        Python, ``onError`` in JS); the connection stays open."""
        answer = realtime_error(error, reason, "fal_mock.on_realtime_error()")
        self._register("on_realtime_error", model, constant(None), {}, socket=answer)

    def on_websocket(self, model: ModelArg, handler: Callable[[Any], Any], *, path: str = "") -> None:
        """Serve raw WebSocket connections to ``{model}{path}`` (``fal_client.ws_connect``):
        ``handler(frame: str | bytes)`` returns the frames to send back (``str`` as text,
        ``bytes`` as binary, a list of them, or None)."""
        answer = websocket_answer(handler, path, "fal_mock.on_websocket()")
        self._register("on_websocket", model, constant(None), {}, socket=answer)

    def load_fixtures(self, path: Union[str, Path]) -> int:
        """Load a fixture file (or a directory of ``*.json``) for the whole session."""
        return self.add_session_stubs(load_path(Path(path)))

    def add_fixture_document(self, document: Any, source: str = "fixtures") -> int:
        """Add session stubs from an already-parsed ``{"fixtures": [...]}`` document."""
        return self.add_session_stubs(parse_document(document, source))

    def clear_session_stubs(self) -> int:
        """Forget every session stub (fixture files, the control API, recordings); returns how
        many there were. Per-test stubs stay until :meth:`reset`."""
        return self._stores.clear_session_stubs()

    def add_session_stubs(self, stubs: Sequence[Stub]) -> int:
        """Register already-parsed stubs for the whole session (documented-internal: the plugin
        and the CLI parse fixture files up front, to report a bad file before serving)."""
        for stub in stubs:
            self._stores.add_stub(stub, session=True)
        return len(stubs)

    # -- files --------------------------------------------------------------------------
    def add_file(self, data: bytes, content_type: str, file_name: Optional[str] = None) -> str:
        """Serve ``data`` as ``content_type`` until the test ends; returns its URL on the mock.

        Use it for a real sample (a photo, a clip) that a stub's response should point at.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"fal_mock.add_file(): data must be bytes, got {type(data).__name__}")
        if not isinstance(content_type, str) or not content_type.strip():
            raise TypeError(
                "fal_mock.add_file(): content_type must be a media type such as 'image/png', "
                f"got {content_type!r}"
            )
        if file_name is not None and not isinstance(file_name, str):
            raise TypeError(f"fal_mock.add_file(): file_name must be a str or None, got {file_name!r}")
        if not self.is_running():
            raise RuntimeError("fal_mock.add_file(): start the mock first (the URL names its port)")
        key = (new_file_id(), safe_name(file_name or "", content_type))
        url = file_url(self.base_url, *key)
        self._stores.add_file(FileEntry(key, BytesBlob(bytes(data)), content_type.strip(), "added", url))
        return url

    @property
    def files(self) -> list[ServedFile]:
        """Every file the mock serves now: recorded media, then this test's uploads, added files
        and the generated media downloaded so far."""
        return [
            ServedFile(
                entry.url or file_url(self.base_url, *entry.key),
                entry.file_name,
                entry.content_type,
                entry.blob,
                entry.source,
            )
            for entry in self._stores.files.entries()
        ]

    def take_warnings(self) -> list[str]:
        """Warnings noted since the last call (documented-internal: e.g. a recording that kept a
        media URL it could not download); the plugin reports them as ``FalMockWarning``."""
        return self._stores.take_notes()

    # -- inspecting ---------------------------------------------------------------------
    def add_request_listener(self, listener: RequestListener) -> None:
        """Call ``listener(request, unmatched)`` after each fal request is journaled (control
        API calls excluded), on the thread serving it; ``unmatched`` is the
        :class:`UnmatchedRequest` with each stub's reason when nothing matched, else None.
        The standalone server logs through it."""
        self._engine.request_listeners.append(listener)

    @property
    def requests(self) -> list[FalRequest]:
        """The journal: every request the mock received since the last reset, in order."""
        return self._stores.snapshot(self._stores.journal)

    @property
    def uploads(self) -> list[Upload]:
        """Files uploaded in this test, in order (a multipart upload once, when completed)."""
        return [
            Upload(entry.url or "", entry.file_name, entry.content_type, entry.blob, entry.via)
            for entry in self._stores.files.entries()
            if entry.source == "upload"
        ]

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        self._webhooks.drain()
        return self._stores.snapshot(self._stores.webhooks)

    @property
    def unmatched(self) -> list[UnmatchedRequest]:
        return self._stores.snapshot(self._stores.unmatched)

    def assert_called(self, model: ModelArg, times: Optional[int] = None) -> None:
        """Assert submits, runs, streams or realtime messages for ``model`` were made (exactly
        ``times`` if given)."""
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
        """Raise ``AssertionError`` if a request matched no stub (unless the settings allow it)
        or the server hit a bug."""
        __tracebackhide__ = True
        problems = self.problems()
        if problems:
            raise AssertionError(problems)

    def blocked_webhooks(self) -> list[WebhookDelivery]:
        """Webhooks refused because their URL is not loopback (recorded at once: no waiting)."""
        return [d for d in self._stores.snapshot(self._stores.webhooks) if d.outcome == "blocked"]

    def problems(self, *, allow_unmatched: Optional[bool] = None) -> str:
        """The teardown report: unmatched requests (unless allowed, by default per the
        settings) and internal errors."""
        if allow_unmatched is None:
            allow_unmatched = self._settings.allow_unmatched
        parts = []
        unmatched = self.unmatched
        if unmatched and not allow_unmatched:
            parts.append(unmatched_message(unmatched, self._stores.unmatched_dropped))
        failed = self._stores.snapshot(self._stores.handler_errors)
        if failed:
            parts.append(handler_errors_message(failed))
        errors = list(self._server.internal_errors)
        if errors:
            parts.append(
                "fal_mock: the mock server hit an internal error (please report it):\n" + "\n".join(errors)
            )
        return "\n\n".join(parts)
