"""The server: sockets in, :class:`Reply` values out, through exactly one request path.

:class:`FalMockServer` stands on the two packages this project is built on:

- **pytest-httpserver**'s ``HTTPServerBase`` gives it the server object's shape - ``host``,
  ``port``, ``url_for``, ``is_running``, ``start``/``stop`` and the context manager - as
  pytest users know it;
- **werkzeug**'s ``ThreadedWSGIServer`` (under :class:`._http.FastServer`) owns the listening
  socket, the address family and one thread per connection.

Every request is read off the socket by the lean HTTP/1.1 handler in :mod:`._http` and answered
by :meth:`FalMockServer.respond`: the HTTP-level policy is applied once for every route (the
``Host`` must name this machine or an allowed host; the control API family answers no web page
and takes JSON only, without CORS grants), routing parses the request into an operation, one
table of handlers (the engine's fal routes and the control API's routes) answers it, and
:meth:`_render` turns the reply into bytes. ``dispatch``, the abstract WSGI entry point of
``HTTPServerBase``, delegates to the same :meth:`respond`.
"""

from __future__ import annotations

import json
import re
import threading
import traceback
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

from pytest_httpserver.httpserver import HTTPServerBase, HTTPServerError
from werkzeug.wrappers import Request, Response

from . import _routing as routing
from ._blob import Blob, BlobGone, BytesBlob
from ._constants import FAL_HOSTS
from ._headers import FRAMING_HEADERS, Headers
from ._http import FastServer
from ._http_limits import ConnectionLimits
from ._http_wire import HttpRequest, HttpResponse, HttpUpgrade, header_lines
from ._net import foreign_page, host_name, host_of, is_loopback_host
from ._operation import ROUTES, Operation, Route, RouteError, parse_query
from ._reply import JSON, Reply
from ._settings import DEFAULT_MAX_BODY, DEFAULT_MAX_INPUT, Settings
from ._websocket import GOING_AWAY

Handler = Callable[[Operation], Reply]
#: Journals a request routing refused (:meth:`._engine.Engine.record_rejected`).
RejectedListener = Callable[[str, str, "dict[str, str]", Headers, RouteError, Blob], None]

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "*",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, POST, PUT, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Max-Age": "600",
}
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
SERVER_HEADERS = [("Server", "fal_mock")]
_PREFLIGHT_HEAD = header_lines(PREFLIGHT.items())
_JSON_HEAD = header_lines([*CORS.items(), ("Content-Type", JSON)])
_PLAIN_JSON_HEAD = header_lines([("Content-Type", JSON)])
#: Internal errors kept for the report (tracebacks); later ones are counted.
MAX_INTERNAL_ERRORS = 20
#: Distinct accepted ``Host`` values remembered (the check's fast path), at most.
_HOST_CACHE = 1024
#: Wildcard addresses: binding one names no host a client would send.
_WILDCARDS = frozenset({"0.0.0.0", "::"})
#: Names the server sets itself; a reply header of the same name replaces (or is dropped for) them.
_OWN = frozenset({*(name.lower() for name in CORS), "content-type"})
_FRAMING = FRAMING_HEADERS
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: The C encoder ``json.dumps`` builds on every call, built once (no circular-reference
#: bookkeeping: payloads were checked with ``json.dumps`` when registered).
_c_encode: Optional[Callable[[Any, int], Iterable[str]]] = (
    c_make_encoder(None, _encoder.default, c_encode_basestring, None, ":", ",", False, False, True)
    if c_make_encoder is not None and c_encode_basestring is not None
    else None
)


def encode(body: Any) -> bytes:
    """Compact UTF-8 JSON, as fal sends it (what ``json.dumps(..., ensure_ascii=False)`` gives)."""
    if _c_encode is None:  # pragma: no cover - CPython always has the C accelerator
        return _encoder.encode(body).encode()
    return "".join(_c_encode(body, 0)).encode()


def _sse(events: Iterator[Any]) -> Iterator[bytes]:
    for event in events:
        yield b"data: " + encode(event) + b"\n\n"


def _pieces(blob: Blob) -> Iterator[bytes]:
    """A served file's bytes; a file dropped by a reset mid-download ends the answer short (the
    client sees the connection close before ``Content-Length``), reported as nothing else."""
    try:
        yield from blob.chunks()
    except BlobGone:
        return


class FalMockServer(HTTPServerBase):
    """Serves every route of :data:`._operation.ROUTES` from ``handlers``."""

    def __init__(
        self,
        handlers: Mapping[Route, Handler],
        rejected: RejectedListener,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_input: int = DEFAULT_MAX_INPUT,
        limits: Optional[ConnectionLimits] = None,
        allow_hosts: Iterable[str] = (),
    ) -> None:
        missing = [route for route in ROUTES if route not in handlers]
        if missing:
            raise ValueError(f"no handler for the routes {', '.join(missing)}")
        super().__init__(host, port, threaded=True)
        self.handlers = dict(handlers)
        self.rejected = rejected
        self.max_body = max_body
        #: Largest JSON input decoded and largest WebSocket message (``Settings.max_input``, or
        #: the body limit when that is lower).
        self.max_input = min(max_input, max_body)
        self.limits = limits or Settings().connection_limits
        bound = host_name(host)
        if bound is None or bound in _WILDCARDS or is_loopback_host(bound):
            bound = None  # a wildcard names no host; a loopback one is served anyway
        #: Host names a request may name besides loopback ones: the bound host and the allowed.
        self.allowed_hosts = frozenset({*allow_hosts, *([bound] if bound else [])})
        self._accepted_hosts: set[str] = set()
        #: Unexpected exceptions raised while serving (reported at test teardown): the first
        #: :data:`MAX_INTERNAL_ERRORS`, the rest counted.
        self.internal_errors: list[str] = []
        self.internal_errors_dropped = 0
        self._http: Optional[FastServer] = None
        #: ``url_for("")`` costs an IPv6 parse: asked every test, it is made when the port is known.
        self._base_url = self.url_for("").rstrip("/")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Like the inherited ``start()``, with the lean server of :mod:`._http`."""
        if self.is_running():
            raise HTTPServerError("Server is already running")
        server = FastServer(self.host, self.port, self, SERVER_HEADERS, self.limits)
        self.server = self._http = server
        self.port = server.port
        self._base_url = self.url_for("").rstrip("/")
        self.server_thread = threading.Thread(target=self.thread_target, daemon=True, name="fal_mock-server")
        self.server_thread.start()

    def stop(self) -> None:
        """Stop accepting, close every connection (idle keep-alive ones too), join all threads."""
        server, thread = self._http, self.server_thread
        if server is None or thread is None or not self.is_running():
            raise HTTPServerError("Server is not running")
        try:
            server.shutdown()
            server.websockets.close_all(GOING_AWAY, "fal_mock stopped")
            server.close_connections()
        finally:
            server.server_close()
            thread.join()
            self.server = self._http = None
            self.server_thread = None

    @property
    def base_url(self) -> str:
        return self._base_url

    def close_websockets(self) -> None:
        """Close every open WebSocket connection (1001 going away), e.g. at the end of a test."""
        if self._http is not None:
            self._http.websockets.close_all(GOING_AWAY, "fal_mock reset: the test ended")

    @property
    def connection_count(self) -> int:
        """Open client connections (0 when stopped)."""
        return self._http.connection_count if self._http is not None else 0

    # -- the request path (:class:`._http_connection.Responder`) -----------------------------------------
    def respond(self, request: HttpRequest) -> HttpResponse:
        try:
            control = routing.is_control(request.path)
            refusal = self._host_refusal(request.headers)
            if refusal is None and control:
                refusal = self._control_refusal(request)
            if refusal is not None:
                return self._render(refusal, cors=not control)
            if request.method == "OPTIONS":  # a preflight: granted on fal routes only
                return HttpResponse(204, "" if control else _PREFLIGHT_HEAD)
            return self._render(self.answer(request), cors=not control)
        except Exception as exc:  # the server must answer whatever happens
            return self._render(self._internal_error(exc))

    # -- policy for every route ---------------------------------------------------------------
    def _host_refusal(self, headers: Headers) -> Optional[Reply]:
        """400/421 unless ``Host`` names a loopback host, the bound host or an allowed one.

        A page on another site that gets its name resolved to 127.0.0.1 (DNS rebinding) still
        sends its own name in ``Host``, so it is refused here.
        """
        value = headers.get("host")
        if value is None or value in self._accepted_hosts:  # no Host: HTTP/1.0 (1.1 gets 400)
            return None
        host = host_of(value)
        if host is None:
            return Reply(400, {"detail": f"Malformed Host header {value[:200]!r}"})
        if not is_loopback_host(host) and host not in self.allowed_hosts:
            names = ", ".join(sorted(self.allowed_hosts)) or "none"
            message = (
                f"Host {host!r} is not served: fal_mock answers requests for localhost and loopback "
                f"addresses, the host it was bound to and allowed hosts (now: {names}). Allow more "
                "names with fal-mock --allow-host NAME, FalMock(allow_hosts=[...]) or the "
                "fal_allow_hosts ini option."
            )
            return Reply(421, {"detail": message})
        if len(self._accepted_hosts) < _HOST_CACHE:
            self._accepted_hosts.add(value)
        return None

    @staticmethod
    def _control_refusal(request: HttpRequest) -> Optional[Reply]:
        """The control API's rules: no web page drives it (403), and bodies are JSON (415)."""
        page = foreign_page(request.headers)
        if page is not None:
            return Reply(
                403,
                {
                    "detail": f"The control API does not answer {page}: it is for tools and tests on "
                    "this machine (requests without an Origin, or from a loopback page)."
                },
            )
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        content_type = request.headers.get("content-type")
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != JSON and (content_type is not None or request.body):
            shown = repr(content_type) if content_type is not None else "none"
            return Reply(
                415,
                {"detail": f"The control API takes JSON only: send Content-Type: {JSON} (got {shown})"},
            )
        return None

    def answer(self, request: HttpRequest) -> Reply:
        """Route one request and let its route's handler answer it."""
        headers = request.headers
        try:
            op = routing.parse(
                request.method,
                request.path,
                request.query,
                headers,
                request.body,
                self._base_url_for(headers),
                self.max_input,
            )
        except RouteError as error:
            if not error.control:
                query = parse_query(request.query)
                self.rejected(request.method, request.path, query, headers, error, request.body)
            reply = Reply(error.status, error.body)
            if error.allow:
                reply.headers["Allow"] = error.allow
            return reply
        return self.handlers[op.route](op)

    def too_large(self, length: Optional[int], path: Optional[str] = None) -> HttpResponse:
        if length is None:
            reply = Reply(413, {"detail": f"Request body exceeds the {self.max_body}-byte limit"})
        else:
            message = f"Request body of {length} bytes exceeds the {self.max_body}-byte limit"
            reply = Reply(413, {"detail": message})
        return self._render(reply, close=True, cors=path is None or not routing.is_control(path))

    def protocol_error(self, status: int, message: str, path: Optional[str] = None) -> HttpResponse:
        cors = path is None or not routing.is_control(path)  # the control API grants none, ever
        return self._render(Reply(status, {"detail": message}), close=True, cors=cors)

    def report(self, exc: BaseException) -> None:
        if len(self.internal_errors) >= MAX_INTERNAL_ERRORS:
            self.internal_errors_dropped += 1
            return
        self.internal_errors.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def clear_internal_errors(self) -> None:
        self.internal_errors.clear()
        self.internal_errors_dropped = 0

    def dispatch(self, request: Request) -> Response:
        """``HTTPServerBase``'s WSGI entry point, answered by :meth:`respond` (never used to serve)."""
        query = request.query_string.decode("latin-1")
        target = request.path + (f"?{query}" if query else "")
        headers = Headers(request.headers.items())
        data = BytesBlob(request.get_data())
        answer = self.respond(
            HttpRequest(request.method, target, request.path, query, "HTTP/1.1", headers, data)
        )
        fields = [line.split(": ", 1) for line in answer.head.split("\r\n") if line]
        body = answer.body if answer.stream is None else b"".join(answer.stream)
        return Response(body, status=answer.status, headers=[(name, value) for name, value in fields])

    # -- rendering ----------------------------------------------------------------------------
    def _render(self, reply: Reply, close: bool = False, cors: bool = True) -> HttpResponse:
        """``reply`` as an answer; ``cors=False`` (the control API) grants no other origin."""
        extra = reply.headers
        if reply.websocket is not None:  # the 101 itself is written by _websocket
            return HttpUpgrade(header_lines(extra.items()), reply.websocket)
        if reply.events is None and reply.raw is None:
            body = encode(reply.body)
            json_head = _JSON_HEAD if cors else _PLAIN_JSON_HEAD
            if not extra:
                return HttpResponse(reply.status, json_head, body, close=close)
            if not any(name.lower() in _OWN or name.lower() in _FRAMING for name in extra):
                return HttpResponse(reply.status, json_head + header_lines(extra.items()), body, close=close)
            return HttpResponse(reply.status, self._head(extra, JSON, cors), body, close=close)
        if reply.events is not None:
            head = self._head({**extra, "Cache-Control": "no-store"}, SSE_CONTENT_TYPE, cors)
            return HttpResponse(reply.status, head, stream=_sse(reply.events), close=close)
        raw = reply.raw
        assert raw is not None
        head = self._head(extra, reply.content_type, cors)
        if raw.in_memory:
            return HttpResponse(reply.status, head, raw.read(), close=close)
        return HttpResponse(reply.status, head, stream=_pieces(raw), close=close, length=raw.size)

    @staticmethod
    def _head(extra: dict[str, str], content_type: str, cors: bool = True) -> str:
        """CORS, then the reply's own headers (which win), then a Content-Type unless given."""
        merged = {name.lower(): (name, value) for name, value in CORS.items()} if cors else {}
        for name, value in extra.items():
            if name.lower() not in _FRAMING:
                merged[name.lower()] = (name, value)
        merged.setdefault("content-type", ("Content-Type", content_type))
        return header_lines(merged.values())

    def _base_url_for(self, headers: Headers) -> str:
        """Where URLs in answers point: the ``Host`` the client used, unless it names fal itself."""
        host = headers.get("Host", "")
        if not _HOST.match(host) or routing.normalize_host(host) in FAL_HOSTS:
            return self.base_url
        return f"http://{host}"

    def _internal_error(self, exc: Exception) -> Reply:
        self.report(exc)
        return Reply(500, {"detail": f"fal_mock internal error: {exc!r}"})
