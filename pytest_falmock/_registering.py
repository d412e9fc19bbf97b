"""The ``on_*`` helpers: each validates its arguments and registers one :class:`Stub`.

:class:`Registering` is a mixin of :class:`~pytest_falmock.FalMock`, which gives it the stores
and the settings of the moment; the helpers share one private path, :meth:`Registering._register`.
"""

from __future__ import annotations

import os
import sys
from http import HTTPStatus
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, TypedDict

from ._errors import FalMockUsageError
from ._payloads import MediaRenderer, constant, file_renderer, image_renderer, json_ready
from ._realtime import realtime_answer, realtime_error, websocket_answer
from ._settings import Settings
from ._stores import Stores
from ._stubs import (
    InputMatcher,
    ModelSpec,
    OnlyKind,
    OptionError,
    Renderer,
    SocketAnswer,
    describe_model,
    make_stub,
    model_spec,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

ModelArg = ModelSpec


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
    """Keywords of ``on_queue``, ``on_run``, ``on_image``, ``on_video`` and ``on_audio``."""

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


class Registering:
    """The ``on_*`` helpers of :class:`~pytest_falmock.FalMock`."""

    _stores: Stores
    _settings: Settings

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
        generated = render.generated if isinstance(render, MediaRenderer) else ()
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
                generated=generated,
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
        """An image response in fal's shape; missing fields get defaults (docs/wire.md)."""
        render = image_renderer(json_ready(payload, "fal_mock.on_image()"))
        self._register("on_image", model, render, options)

    def on_video(self, model: ModelArg, payload: Mapping[str, Any], **options: Unpack[StubOptions]) -> None:
        """A video response in fal's shape; missing fields get defaults (docs/wire.md)."""
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
