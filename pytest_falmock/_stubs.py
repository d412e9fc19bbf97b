"""Stubs - the responses a test or a fixture file registers - and how a request is matched.

(The pytest fixture is ``fal_mock``; a *fixture file* is JSON on disk; a :class:`Stub` is one
registered response, whichever way it was registered.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional, Pattern, Sequence, Union
from urllib.parse import urlsplit

from ._constants import CDN_HOSTS, QUEUE_HOSTS, REST_HOSTS, RUN_HOSTS
from ._files import RecordedMedia
from ._headers import HeaderError, stub_headers

#: What a request asks for: a queue submit, a synchronous run, or a streamed run; or on a
#: WebSocket: a connection (either protocol), a realtime (msgpack) message, a raw message.
Kind = Literal["queue", "run", "stream", "connection", "realtime", "websocket"]
#: The kinds a stub can be restricted to (``route=`` of the helpers, ``match.route`` of files).
OnlyKind = Literal["queue", "run"]
#: How a stub serving WebSocket connections speaks: fal's realtime protocol or raw frames.
SocketProtocol = Literal["realtime", "websocket"]
_SOCKET_KINDS = ("connection", "realtime", "websocket")
ModelSpec = Union[str, Pattern[str]]
InputMatcher = Union[Mapping[str, Any], Callable[[Any], bool], None]
FAL_HOSTS = QUEUE_HOSTS | RUN_HOSTS | REST_HOSTS | CDN_HOSTS
#: The longest ``latency`` a stub may have, in seconds (a year: a wait stays a finite sleep).
MAX_LATENCY = 365 * 24 * 3600


@dataclass(frozen=True)
class RenderContext:
    """What a stub's body may depend on besides the request input: where the mock is, as the
    client sees it (``Operation.base_url``, which follows the ``Host`` header), for media URLs."""

    base_url: str


#: ``render(request input, context) -> response body``.
Renderer = Callable[[Any, RenderContext], Any]


def describe_model(model: ModelSpec) -> str:
    if isinstance(model, str):
        return repr(model)
    return f"re.compile({model.pattern!r})"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``: a request's path is decoded from what
    any client (a web page) sent, and an escape sequence in it must not reach a terminal."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def summarize(value: Any, limit: int = 120) -> str:
    """A one-line, bounded rendering of a request input for messages."""
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_subset(expected: Any, actual: Any) -> bool:
    """``expected`` dict keys all present in ``actual`` with equal values (dicts recursively)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


class OptionError(ValueError):
    """A registration option out of range; each front-end words where it came from."""

    def __init__(self, name: str, requirement: str, value: Any) -> None:
        super().__init__(f"{name} must be {requirement}, got {value!r}")
        self.name = name
        self.requirement = requirement
        self.value = value


@dataclass(frozen=True)
class SocketAnswer:
    """What a stub answers on WebSocket connections (``on_realtime``, ``on_realtime_error``,
    ``on_websocket``; see :mod:`._realtime`)."""

    protocol: SocketProtocol
    #: The endpoint path after the model: ``/realtime`` for realtime, ``path=`` of ``on_websocket``.
    path: str
    #: realtime: a dict, a list of dicts or a callable; websocket: the frame handler.
    reply: Any = None
    #: ``on_realtime_error``: the ``(error, reason)`` of the ``x-fal-error`` it sends.
    error: Optional[tuple[str, str]] = None


@dataclass(eq=False)
class Stub:
    """One registered response. Mutable only in ``used`` (guarded by the store's lock)."""

    model: ModelSpec
    render: Renderer
    label: str
    status: int = 200
    #: Serve only queue submits or only runs; None serves both.
    only_kind: Optional[OnlyKind] = None
    match_input: InputMatcher = None
    times: Optional[int] = None
    latency: float = 0.0
    error_type: Optional[str] = None
    events: Optional[Sequence[Any]] = None
    #: Extra response headers (validated by :func:`._headers.stub_headers`).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Set on stubs a recording produced: a later recording with the same key replaces this one.
    recording_key: Optional[str] = None
    #: Recorded media files the body's URLs are rewritten to (served for the session).
    media: Sequence[RecordedMedia] = ()
    #: Warnings about how the stub was made (e.g. a recording that kept a media URL).
    notes: Sequence[str] = ()
    #: Set on stubs that serve WebSocket connections (and only those).
    socket: Optional[SocketAnswer] = None
    #: The generated media its answers point at, ``(spec segment, file name)`` each: the mock
    #: serves (and generates) only these under ``/fal/files/generated/``.
    generated: Sequence[tuple[str, str]] = ()
    used: int = field(default=0)

    @property
    def is_stream(self) -> bool:
        return self.events is not None

    def reject_reason(self, kind: Kind, model: str, request_input: Any) -> Optional[str]:
        """Why this stub does not serve the request, or None when it does.

        For the WebSocket kinds ``model`` is the whole endpoint path (``fal-ai/x/realtime``).
        """
        reason = self._kind_reason(kind)
        if reason is None:
            reason = self._model_reason(model) if self.socket is None else self._endpoint_reason(model)
        if reason is not None:
            return reason
        if self.times is not None and self.used >= self.times:
            return f"used up (served {self.used} of times={self.times})"
        matcher = self.match_input
        if matcher is None or kind == "connection":  # a connection has no input: its messages do
            return None
        if callable(matcher):
            try:
                ok = bool(matcher(request_input))
            except Exception as exc:  # a user callback must not crash the server
                return f"match_input raised {exc!r}"
            return None if ok else "match_input callable returned False"
        if not is_subset(matcher, request_input):
            return f"input {summarize(request_input, 80)} does not contain {summarize(matcher, 80)}"
        return None

    def _kind_reason(self, kind: Kind) -> Optional[str]:
        socket = self.socket
        if kind in _SOCKET_KINDS:
            if socket is None:
                return "not a WebSocket fixture (register one with on_realtime() or on_websocket())"
            if kind != "connection" and socket.protocol != kind:
                return f"{socket.protocol} fixture, the connection speaks {kind}"
            return None
        if socket is not None:
            return f"{socket.protocol} fixture (WebSocket), request is a {kind} request"
        if kind == "stream" and not self.is_stream and (self.status < 400 or self.only_kind == "queue"):
            return "not a stream fixture (register one with on_stream())"
        if kind != "stream" and self.is_stream:
            return (
                f"stream fixture, request is a {kind} request "
                "(a stream asks for Accept: text/event-stream or posts to .../stream)"
            )
        if kind != "stream" and self.only_kind is not None and self.only_kind != kind:
            return f"route={self.only_kind!r}, request is a {kind} request"
        return None

    def _model_reason(self, model: str) -> Optional[str]:
        if isinstance(self.model, str):
            return None if self.model == model else f"model {self.model!r} != {model!r}"
        if self.model.search(model) is None:
            return f"pattern {self.model.pattern!r} does not match {model!r}"
        return None

    def _endpoint_reason(self, endpoint: str) -> Optional[str]:
        """The endpoint must be this stub's model followed by its path."""
        assert self.socket is not None
        path = self.socket.path
        if isinstance(self.model, str):
            expected = self.model + path
            return None if expected == endpoint else f"endpoint {expected!r} != {endpoint!r}"
        if not endpoint.endswith(path):
            return f"endpoint {endpoint!r} does not end with {path!r}"
        return self._model_reason(endpoint[: len(endpoint) - len(path)])

    def model_of(self, endpoint: str) -> str:
        """The model part of an endpoint this (WebSocket) stub serves."""
        path = self.socket.path if self.socket is not None else ""
        return endpoint[: len(endpoint) - len(path)] if path else endpoint


def make_stub(
    model: ModelSpec,
    render: Renderer,
    label: str,
    *,
    status: int = 200,
    only_kind: Optional[OnlyKind] = None,
    match_input: InputMatcher = None,
    times: Any = None,
    latency: Any = 0.0,
    error_type: Optional[str] = None,
    events: Optional[Sequence[Any]] = None,
    headers: Any = None,
    media: Sequence[RecordedMedia] = (),
    socket: Optional[SocketAnswer] = None,
    generated: Sequence[tuple[str, str]] = (),
) -> Stub:
    """A validated :class:`Stub`; ``times``, ``latency`` or ``headers`` out of range raise
    :class:`OptionError`.

    The one place the helpers and the fixture-file parser build stubs.
    """
    try:
        extra_headers = stub_headers(headers)
    except HeaderError as exc:
        raise OptionError("headers", exc.requirement, exc.value) from None
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise OptionError("times", "a positive integer", times)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency <= MAX_LATENCY:
        # NaN, infinity and ints past float's range fail the comparison too
        raise OptionError("latency", f"a non-negative number of seconds, at most {MAX_LATENCY:,}", latency)
    return Stub(
        model=model,
        render=render,
        label=label,
        status=status,
        only_kind=only_kind,
        match_input=match_input,
        times=times,
        latency=float(latency),
        error_type=error_type,
        events=events,
        headers=extra_headers,
        media=tuple(media),
        socket=socket,
        generated=tuple(generated),
    )


def model_id_problem(model: str) -> Optional[str]:
    """Why ``model`` is not a fal endpoint id (``owner/alias[/path]``) and how to write it, or None.

    Shared by the helpers and the fixture-file parser, so a typo fails where it is made
    instead of as an unmatched request at teardown.
    """
    if not model:
        return "model must not be empty (e.g. 'fal-ai/flux/dev')"
    fixed = model.strip()
    if any(ch.isspace() for ch in fixed):
        return f"{model!r} is not a fal model id: it contains whitespace (ids look like 'fal-ai/flux/dev')"
    host = ""
    if "://" in fixed:
        parts = urlsplit(fixed)
        host, fixed = parts.netloc, parts.path
    else:
        first, _, rest = fixed.partition("/")
        if first.lower() in FAL_HOSTS:
            host, fixed = first, rest
    fixed = "/".join(segment for segment in fixed.split("/") if segment)
    if fixed == model:
        return None
    if host:
        reason = f"it names the host {host}"
    elif any(ch.isspace() for ch in model):
        reason = "it contains whitespace"
    elif model.startswith("/") or model.endswith("/"):
        reason = "it starts or ends with '/'"
    else:
        reason = "it has an empty path segment ('//')"
    fix = f"use {fixed!r}" if fixed else "name the model, e.g. 'fal-ai/flux/dev'"
    return f"{model!r} is not a fal model id: {reason}; {fix}"


def model_spec(model: object, where: str) -> ModelSpec:
    if isinstance(model, str):
        problem = model_id_problem(model)
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
        return model
    if isinstance(model, re.Pattern):
        return model
    raise TypeError(f"{where}: model must be a str or a compiled re.Pattern, got {model!r}")
