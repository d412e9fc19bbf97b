"""The HTTP layer: a thin ``pytest_httpserver.HTTPServerBase`` that routes, then asks the engine.

Requests are served by the lean HTTP/1.1 server in :mod:`._http` (keep-alive, one thread per
connection, no WSGI on the hot path). :meth:`FalMockServer.application` and
:meth:`FalMockServer.dispatch` remain a complete werkzeug/WSGI entry point to the same logic
(``server.server.app`` is a WSGI app), so both paths answer identically.
"""

from __future__ import annotations

import json
import re
import threading
import traceback
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any, Callable, Iterable, Iterator, Optional

from pytest_httpserver.httpserver import HTTPServerBase, HTTPServerError
from werkzeug.wrappers import Request, Response

from . import _routing as routing
from ._constants import CDN_HOSTS, QUEUE_HOSTS, REST_HOSTS, RUN_HOSTS
from ._engine import Engine
from ._headers import Headers
from ._http import FastServer
from ._http_wire import HttpRequest, HttpResponse, header_lines
from ._reply import JSON, Reply

DEFAULT_MAX_BODY = 128 * 1024 * 1024
CONTROL_PREFIX = "/__falmock/"
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
#: Names the server sets itself; a reply header of the same name replaces (or is dropped for) them.
_OWN = frozenset({*(name.lower() for name in CORS), "content-type"})
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "date"})
FAL_HOSTS = QUEUE_HOSTS | RUN_HOSTS | REST_HOSTS | CDN_HOSTS
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


class FalMockServer(HTTPServerBase):
    """Serves the fal routes; every answer comes from :class:`Engine`."""

    def __init__(
        self, engine: Engine, host: str = "127.0.0.1", port: int = 0, *, max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        super().__init__(host, port, threaded=True)
        self.engine = engine
        self.max_body = max_body
        #: Unexpected exceptions raised while serving (reported at test teardown).
        self.internal_errors: list[str] = []
        self.control: Optional[Any] = None
        self._http: Optional[FastServer] = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Like the inherited ``start()``, with the lean server of :mod:`._http`."""
        if self.is_running():
            raise HTTPServerError("Server is already running")
        app = Request.application(self.application)
        server = FastServer(self.host, self.port, app, self, SERVER_HEADERS)
        self.server = self._http = server
        self.port = server.port
        self.server_thread = threading.Thread(target=self.thread_target, daemon=True, name="fal_mock-server")
        self.server_thread.start()

    def thread_target(self) -> None:
        """Serve until stopped; a short poll interval makes ``stop()`` quick.

        (:class:`._http.FastServer` is woken at once on stop and ignores the interval.)
        """
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)

    def stop(self) -> None:
        """Stop accepting, close every connection (idle keep-alive ones too), join all threads."""
        server, thread = self._http, self.server_thread
        if server is None or thread is None or not self.is_running():
            raise HTTPServerError("Server is not running")
        try:
            server.shutdown()
            server.close_connections()
        finally:
            server.server_close()
            thread.join()
            self.server = self._http = None
            self.server_thread = None

    @property
    def base_url(self) -> str:
        return self.url_for("").rstrip("/")

    @property
    def connection_count(self) -> int:
        """Open client connections (0 when stopped)."""
        return self._http.connection_count if self._http is not None else 0

    # -- the lean path (:class:`._http.Responder`) ------------------------------------------
    def respond(self, request: HttpRequest) -> HttpResponse:
        if request.method == "OPTIONS":
            return HttpResponse(204, _PREFLIGHT_HEAD)
        try:
            reply = self.answer(request.method, request.path, request.query, request.headers, request.body)
            return self._render(reply)
        except Exception as exc:  # the server must answer whatever happens
            return self._render(self._internal_error(exc))

    def too_large(self, length: Optional[int]) -> HttpResponse:
        return self._render(self._too_large(length), close=True)

    def protocol_error(self, status: int, message: str) -> HttpResponse:
        return self._render(Reply(status, {"detail": message}), close=True)

    def report(self, exc: BaseException) -> None:
        self.internal_errors.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def _render(self, reply: Reply, close: bool = False) -> HttpResponse:
        extra = reply.headers
        if reply.events is None and reply.raw is None:
            body = encode(reply.body)
            if not extra:
                return HttpResponse(reply.status, _JSON_HEAD, body, close=close)
            if not any(name.lower() in _OWN or name.lower() in _FRAMING for name in extra):
                return HttpResponse(reply.status, _JSON_HEAD + header_lines(extra.items()), body, close=close)
            return HttpResponse(reply.status, self._head(extra, JSON), body, close=close)
        if reply.events is not None:
            head = self._head({**extra, "Cache-Control": "no-store"}, SSE_CONTENT_TYPE)
            return HttpResponse(reply.status, head, stream=_sse(reply.events), close=close)
        assert reply.raw is not None
        return HttpResponse(reply.status, self._head(extra, reply.content_type), reply.raw, close=close)

    @staticmethod
    def _head(extra: dict[str, str], content_type: str) -> str:
        """CORS, then the reply's own headers (which win), then a Content-Type unless given."""
        merged = {name.lower(): (name, value) for name, value in CORS.items()}
        for name, value in extra.items():
            if name.lower() not in _FRAMING:
                merged[name.lower()] = (name, value)
        merged.setdefault("content-type", ("Content-Type", content_type))
        return header_lines(merged.values())

    # -- the WSGI path ------------------------------------------------------------------------
    def application(self, request: Request) -> Response:
        """WSGI entry point: no eager body read and no request log (unlike the inherited one)."""
        return self.dispatch(request)

    def dispatch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status=204, headers=PREFLIGHT)
        try:
            length = request.content_length
            if length is not None and length > self.max_body:
                return self._response(self._too_large(length), close=True)
            body = (
                request.stream.read(self.max_body + 1)
                if length or request.headers.get("Transfer-Encoding")
                else b""
            )
            if len(body) > self.max_body:
                return self._response(self._too_large(None), close=True)
            headers = Headers(request.headers.items())
            query = request.query_string.decode("latin-1")
            return self._response(self.answer(request.method, request.path, query, headers, body))
        except Exception as exc:
            return self._response(self._internal_error(exc))

    def _response(self, reply: Reply, close: bool = False) -> Response:
        headers = {**CORS, **reply.headers}
        if close:
            headers["Connection"] = "close"
        if reply.events is not None:
            response = Response(
                _sse(reply.events), status=reply.status, headers=headers, mimetype="text/event-stream"
            )
            response.headers["Cache-Control"] = "no-store"
            return response
        if reply.raw is not None:
            return Response(reply.raw, status=reply.status, headers=headers, content_type=reply.content_type)
        return Response(encode(reply.body), status=reply.status, headers=headers, content_type=JSON)

    # -- shared -------------------------------------------------------------------------------
    def answer(self, method: str, path: str, query: str, headers: Headers, body: bytes) -> Reply:
        """Route one request and let the engine answer it (both paths end here)."""
        if self.control is not None and path.startswith(CONTROL_PREFIX):
            reply: Reply = self.control.handle(method, path[len(CONTROL_PREFIX) :], body)
            return reply
        try:
            op = routing.parse(method, path, query, headers, body, self._base_url_for(headers))
        except routing.RouteError as error:
            self.engine.record_rejected(method, path, routing.parse_query(query), headers, error, body)
            reply = Reply(error.status, error.body)
            if error.allow:
                reply.headers["Allow"] = error.allow
            return reply
        return self.engine.handle(op)

    def _base_url_for(self, headers: Headers) -> str:
        """Where URLs in answers point: the ``Host`` the client used, unless it names fal itself."""
        host = headers.get("Host", "")
        if not _HOST.match(host) or routing.normalize_host(host) in FAL_HOSTS:
            return self.base_url
        return f"http://{host}"

    def _too_large(self, length: Optional[int]) -> Reply:
        if length is None:
            return Reply(413, {"detail": f"Request body exceeds the {self.max_body}-byte limit"})
        message = f"Request body of {length} bytes exceeds the {self.max_body}-byte limit"
        return Reply(413, {"detail": message})

    def _internal_error(self, exc: Exception) -> Reply:
        self.report(exc)
        return Reply(500, {"detail": f"fal_mock internal error: {exc!r}"})
