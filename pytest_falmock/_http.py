"""The lean HTTP/1.1 server: one thread per connection, keep-alive, no WSGI on the hot path.

werkzeug's development server builds a WSGI environ, a ``Request`` and a ``Response`` and
logs a line for every request; for a mock answering thousands of tiny JSON requests that is
most of the cost. :class:`FastServer` is still a werkzeug ``ThreadedWSGIServer`` (its socket,
address family and thread-per-connection handling, so ``HTTPServerBase`` can own it), but each
accepted socket is served by :class:`._http_connection.Connection` (``TCP_NODELAY``, requests
read straight off the socket), and:

- :meth:`FastServer.shutdown` returns at once (no 0.5 s poll) and
  :meth:`FastServer.close_connections` closes idle keep-alive connections and joins their
  threads, so a stopped server leaves no thread or socket behind;
- bounded under abuse (:class:`ConnectionLimits`): the accept loop expires connections whose
  phase ran past its deadline (408 for a late request; an idle keep-alive connection is
  closed), answers connections beyond the cap 503, and when ``accept()`` runs out of file
  descriptors answers 503 with a reserved descriptor or backs off, while open connections
  keep being served.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Any, Optional

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family

from . import _websocket as websocket
from ._http_connection import Closed, Connection, Responder
from ._http_limits import NO_DESCRIPTOR, AcceptGuard, ConnectionLimits
from ._http_wire import header_lines, render_closing

#: How long ``close_connections`` waits for connection threads to finish.
JOIN_SECONDS = 5.0


class FastHandler(WSGIRequestHandler):
    """Hands the connection to :class:`Connection`; none of the WSGI machinery runs."""

    protocol_version = "HTTP/1.1"
    server: FastServer

    def setup(self) -> None:  # no rfile/wfile wrappers: Connection reads the socket itself
        pass

    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, self.server)
        self.server.track(sock, connection)
        try:
            connection.serve()
        except (Closed, OSError):  # the peer went away, stop() closed the socket, or it timed out
            pass
        except Exception as exc:
            self.server.responder.report(exc)

    def finish(self) -> None:
        pass


def _no_wsgi(environ: Any, start_response: Any) -> Any:
    """The WSGI app werkzeug's server class insists on; :class:`FastHandler` never calls it."""
    raise RuntimeError("fal_mock answers through its own HTTP/1.1 handler, not WSGI")


class FastServer(ThreadedWSGIServer):
    """werkzeug's threaded server class with :class:`FastHandler` and a prompt, clean stop."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        host: str,
        port: int,
        responder: Responder,
        static_headers: list[tuple[str, str]],
        limits: ConnectionLimits,
    ) -> None:
        self.responder = responder
        self.static_headers = header_lines(static_headers)
        self.limits = limits
        self.closing = False
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        #: The connections that became WebSockets (still in ``_connections`` too).
        self.websockets = websocket.LiveWebSockets()
        #: The connections being served, for the accept loop's deadline checks.
        self._live: dict[socket.socket, Connection] = {}
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._wake: Optional[tuple[socket.socket, socket.socket]] = None
        self._selector: Optional[selectors.BaseSelector] = None
        listener = self._listen(host, port)  # OSError here, not werkzeug's print + sys.exit(1)
        try:
            super().__init__(host, port, _no_wsgi, handler=FastHandler, fd=listener.fileno())
        finally:
            listener.close()  # werkzeug serves a duplicate of it
        self._wake_r, self._wake_w = self._wake = socket.socketpair()
        self.guard = AcceptGuard(limits, self._closing_answer)

    def _closing_answer(self, status: int, message: str) -> bytes:
        return render_closing(self.responder.protocol_error(status, message), self.static_headers)

    def _listen(self, host: str, port: int) -> socket.socket:
        family = select_address_family(host, port)
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(get_sockaddr(host, int(port), family))
            listener.listen(self.request_queue_size)
        except BaseException:
            listener.close()
            raise
        return listener

    # -- accepting --------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept until :meth:`shutdown`; woken by a socket pair (and the guard's ticks), not polling."""
        self.socket.setblocking(False)  # readiness may vanish before accept(); never block there
        guard = self.guard
        listener = self.socket
        try:
            with selectors.DefaultSelector() as selector:
                self._selector = selector
                selector.register(listener, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                listening = True
                while not self._stop_requested.is_set():
                    now = time.monotonic()
                    if not listening and now >= guard.paused_until:
                        selector.register(listener, selectors.EVENT_READ)
                        listening = True
                    ready = selector.select(guard.wait(now))
                    if self._stop_requested.is_set():
                        break
                    for key, _ in ready:
                        if key.fileobj is listener:
                            self._accept()
                        elif key.data is guard:
                            guard.drain(key.fileobj, selector)  # type: ignore[arg-type]
                    now = time.monotonic()
                    if listening and guard.paused_until > now:  # out of descriptors: back off
                        selector.unregister(listener)
                        listening = False
                    with self._lock:
                        live = list(self._live.values())
                    guard.tick(now, live, selector)
                guard.close_lingering(selector)
        finally:
            self._selector = None
            self._stopped.set()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError as exc:  # nothing to accept after all, the client gave up, or no descriptor
            if exc.errno in NO_DESCRIPTOR and self._selector is not None:
                self.guard.out_of_descriptors(self.socket, self._selector)
            return
        self.guard.accepted()
        try:
            self.process_request(request, client_address)
        except Exception:
            self.shutdown_request(request)

    def shutdown(self) -> None:
        """Stop accepting and wait for the accept loop to end (no connection is touched)."""
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            daemon=True,
            name="fal_mock-connection",
        )
        with self._lock:
            if self.closing:
                self.shutdown_request(request)
                return
            full = len(self._connections) >= self.limits.max_connections
            if not full:
                self._connections[request] = thread
        if full:
            if self._selector is None:  # pragma: no cover - only the accept loop calls this
                self.shutdown_request(request)
                return
            message = (
                f"fal_mock is serving its limit of {self.limits.max_connections} connections "
                "(max_connections); try again when one closes"
            )
            self.guard.refuse(request, 503, message, self._selector)
            return
        try:
            thread.start()
        except BaseException:  # e.g. no more threads: drop this connection, keep serving
            with self._lock:
                self._connections.pop(request, None)
            raise

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        # Some platforms (BSD, macOS) pass the listener's non-blocking mode on to the new socket.
        connection.setblocking(True)
        return connection, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception as exc:  # FastHandler reports its own errors; this is a last resort
            self.responder.report(exc)
        finally:
            with self._lock:
                self._connections.pop(request, None)
                self._live.pop(request, None)
                self.shutdown_request(request)

    def track(self, sock: socket.socket, connection: Connection) -> None:
        """Let the accept loop watch ``connection``'s deadlines (called by its own thread)."""
        with self._lock:
            if sock in self._connections:
                self._live[sock] = connection

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Errors accepting a connection are not worth a traceback on stderr."""

    # -- stopping ---------------------------------------------------------------------------
    def close_connections(self, timeout: float = JOIN_SECONDS) -> list[threading.Thread]:
        """Close every open connection (idle keep-alive ones included) and join their threads.

        Returns the threads still alive after ``timeout`` (normally none).
        """
        with self._lock:
            self.closing = True
            connections = list(self._connections.items())
            for sock, _ in connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return [thread for _, thread in connections if thread.is_alive()]

    def server_close(self) -> None:
        super().server_close()
        guard = getattr(self, "guard", None)  # werkzeug calls this from __init__ on failure
        if guard is not None:
            guard.release()
        if self._wake is not None:  # werkzeug calls this from __init__ too, before they exist
            for sock in self._wake:
                sock.close()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)
