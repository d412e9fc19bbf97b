"""The HTTP layer: a thin ``pytest_httpserver.HTTPServerBase`` that routes, then asks the engine."""

from __future__ import annotations

import json
import re
import threading
import traceback
from typing import Any, Iterator, Optional

from pytest_httpserver.httpserver import HTTPServerBase, HTTPServerError
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from . import _routing as routing
from ._engine import Engine
from ._headers import Headers
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
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(events: Iterator[Any]) -> Iterator[bytes]:
    for event in events:
        yield b"data: " + encode(event) + b"\n\n"


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without a log line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


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

    def start(self) -> None:
        """Like the inherited ``start()``, with a quiet request handler."""
        if self.is_running():
            raise HTTPServerError("Server is already running")
        app = Request.application(self.application)
        self.server = make_server(
            self.host, self.port, app, threaded=True, request_handler=QuietRequestHandler
        )
        self.port = self.server.port
        self.server_thread = threading.Thread(target=self.thread_target, daemon=True, name="fal_mock-server")
        self.server_thread.start()

    def thread_target(self) -> None:
        """Serve until stopped; a short poll interval makes ``stop()`` quick."""
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)

    @property
    def base_url(self) -> str:
        return self.url_for("").rstrip("/")

    def application(self, request: Request) -> Response:
        """Entry point: no eager body read and no request log (unlike the inherited one)."""
        return self.dispatch(request)

    def _base_url_for(self, request: Request) -> str:
        host = request.headers.get("Host", "")
        return f"http://{host}" if _HOST.match(host) else self.base_url

    def dispatch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status=204, headers=PREFLIGHT)
        try:
            return self._dispatch(request)
        except Exception as exc:  # the server must answer whatever happens
            self.internal_errors.append("".join(traceback.format_exception(exc)))
            return self._response(Reply(500, {"detail": f"fal_mock internal error: {exc!r}"}))

    def _dispatch(self, request: Request) -> Response:
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._response(
                Reply(
                    413, {"detail": f"Request body of {length} bytes exceeds the {self.max_body}-byte limit"}
                ),
                close=True,
            )
        body = (
            request.stream.read(self.max_body + 1)
            if length or request.headers.get("Transfer-Encoding")
            else b""
        )
        if len(body) > self.max_body:
            return self._response(
                Reply(413, {"detail": f"Request body exceeds the {self.max_body}-byte limit"}), close=True
            )
        headers = Headers(request.headers.items())
        path = request.path
        if self.control is not None and path.startswith(CONTROL_PREFIX):
            return self._response(self.control.handle(request.method, path[len(CONTROL_PREFIX) :], body))
        query = request.query_string.decode("latin-1")
        try:
            op = routing.parse(request.method, path, query, headers, body, self._base_url_for(request))
        except routing.RouteError as error:
            self.engine.record_rejected(
                request.method, path, dict(request.args.items()), headers, error, body
            )
            reply = Reply(error.status, error.body)
            if error.allow:
                reply.headers["Allow"] = error.allow
            return self._response(reply)
        return self._response(self.engine.handle(op))

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
