"""The guard: in a pytest run, fal calls made outside a mocked test never reach fal.ai.

For the whole session the clients are redirected (bottom of the redirect stack) to a small
server on 127.0.0.1 that refuses every request at once with ``403`` and a message that says
what happened and how to fix it: no client retries a 403, so the call fails in milliseconds
instead of retrying a dead host for a minute. The server keeps the calls it refused, so the
plugin can fail the test (or the collection) that made them even if the app swallowed the
error. A request a web page sends (an ``Origin`` or ``Sec-Fetch-Site: cross-site`` of another
site, a ``Host`` that is not loopback) is refused without being kept: a page cannot fail tests.
It starts when a client module is first patched, i.e. when the run imports
``fal_client`` or ``fal``; a run that never does pays nothing.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from .._http import FastServer
from .._http_wire import HttpRequest, HttpResponse, header_lines
from .._net import foreign_page, host_of, is_loopback_host
from .._settings import Settings
from .._urls import PREFIX
from ._redirect import ClientRedirect

#: Where each mock service stands in for fal.
FAL_ORIGINS = {
    "queue": "https://queue.fal.run",
    "run": "https://fal.run",
    "rest": "https://rest.fal.ai",
    "cdn": "https://v3.fal.media",
}
#: Refused calls kept for the report (the rest are counted).
MAX_KEPT = 20
#: The guard reads no body: anything larger is refused without reading it.
MAX_BODY = 1024 * 1024
ERROR_TYPE = "fal_mock_guard"
OPT_OUT = "fal_guard = false in the pytest ini file"


@dataclass(frozen=True)
class GuardedCall:
    """One refused call: its method and the fal URL it was meant for."""

    method: str
    url: str

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


def refusal(calls: list[GuardedCall], total: int) -> str:
    """The teaching message, the same in the client's error and in the failed test."""
    if total == 1 and calls:
        what = f"{calls[0]} was stopped before it reached fal.ai"
    else:
        shown = ", ".join(str(call) for call in calls[:3])
        more = f", and {total - min(len(calls), 3)} more" if total > min(len(calls), 3) else ""
        what = f"{total} fal calls ({shown}{more}) were stopped before they reached fal.ai"
    return (
        f"fal_mock guard: {what}: pytest-falmock refuses fal calls made outside a test that "
        "uses the fal_mock fixture. Use the fal_mock fixture (or @pytest.mark.fal_mock) to "
        "answer them from the mock, or mark the test @pytest.mark.fal_real to call the real "
        f"fal.ai on purpose ({OPT_OUT} turns the guard off)."
    )


def fal_url(request: HttpRequest) -> str:
    """The fal URL a redirected request was meant for (``/fal/queue/x`` -> ``https://queue.fal.run/x``)."""
    path = request.path
    service, _, rest = (
        path[len(PREFIX) + 1 :].partition("/") if path.startswith(PREFIX + "/") else ("", "", "")
    )
    origin = FAL_ORIGINS.get(service)
    if origin is None:
        return quote(path, safe="/:@")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        origin = origin.replace("https://", "wss://", 1)
    return f"{origin}/{quote(rest, safe='/:@')}"


class Guard:
    """The session's guard: :meth:`arm` at start, :meth:`disarm` at the end."""

    def __init__(self) -> None:
        self.redirect = ClientRedirect(self.base_url, opt_out=OPT_OUT)
        self._lock = threading.Lock()
        self._calls: list[GuardedCall] = []
        self._total = 0
        self._server: Optional[FastServer] = None
        self._thread: Optional[threading.Thread] = None
        #: Unexpected errors while serving (reported with the refused calls).
        self.internal_errors: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------
    def arm(self) -> None:
        """Redirect the fal clients imported now or later to the guard."""
        self.redirect.apply()

    def lift(self) -> None:
        """Let the clients reach fal.ai (``@pytest.mark.fal_real``) until :meth:`arm`."""
        self.redirect.undo()

    def disarm(self) -> None:
        """Restore the clients and stop the server (idempotent)."""
        self.redirect.undo()
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None and thread is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
            thread.join()

    def base_url(self) -> str:
        """The server's root URL; starts the server on first use."""
        with self._lock:
            if self._server is None:
                limits = Settings().connection_limits
                server = FastServer("127.0.0.1", 0, self, [("Server", "fal_mock-guard")], limits)
                thread = threading.Thread(target=server.serve_forever, daemon=True, name="fal_mock-guard")
                thread.start()
                self._server, self._thread = server, thread
            return f"http://127.0.0.1:{self._server.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- what it refused ----------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """Calls were refused since the last :meth:`take` (cheap: read on every test phase)."""
        return self._total > 0

    def take(self) -> tuple[list[GuardedCall], int]:
        """The calls refused since the last take (up to :data:`MAX_KEPT`) and how many in all."""
        with self._lock:
            calls, total = self._calls, self._total
            self._calls, self._total = [], 0
        return calls, total

    # -- the Responder protocol of :class:`._http.FastServer` --------------------------------------
    @property
    def max_body(self) -> int:
        return MAX_BODY

    @property
    def max_input(self) -> int:
        return MAX_BODY

    def respond(self, request: HttpRequest) -> HttpResponse:
        page = foreign_page(request.headers)
        host = request.headers.get("host")
        if page is None and host is not None and not is_loopback_host(host_of(host) or ""):
            page = f"a request for the host {host[:100]!r}"
        if page is not None:  # a web page, not the test process: refused, but it fails no test
            body = {"detail": f"fal_mock guard: {page} is not a fal call of this test run"}
            head = header_lines([("Content-Type", "application/json")])
            return HttpResponse(403, head, json.dumps(body).encode(), close=True)
        return self._refuse(GuardedCall(request.method, fal_url(request)))

    def too_large(self, length: Optional[int], path: Optional[str] = None) -> HttpResponse:
        return self._refuse(GuardedCall("POST", "(a large upload)"), close=True)

    def protocol_error(self, status: int, message: str, path: Optional[str] = None) -> HttpResponse:
        return self._refuse(GuardedCall("?", f"(a request that is not valid HTTP: {message})"), close=True)

    def report(self, exc: BaseException) -> None:
        if len(self.internal_errors) < MAX_KEPT:
            self.internal_errors.append(repr(exc))

    def _refuse(self, call: GuardedCall, close: bool = False) -> HttpResponse:
        with self._lock:
            if len(self._calls) < MAX_KEPT:
                self._calls.append(call)
            self._total += 1
        body = {"detail": refusal([call], 1), "error_type": ERROR_TYPE}
        head = header_lines(
            [
                ("Content-Type", "application/json"),
                ("x-fal-request-id", str(uuid.uuid4())),
                ("x-fal-error-type", ERROR_TYPE),
            ]
        )
        return HttpResponse(403, head, json.dumps(body).encode(), close=close)
