"""A lean HTTP/1.1 server: one thread per connection, keep-alive, no WSGI on the hot path.

werkzeug's development server builds a WSGI environ, a ``Request`` and a ``Response`` and
logs a line for every request; for a mock answering thousands of tiny JSON requests that is
most of the cost. This module reads requests straight off the socket into
:class:`~._http_wire.HttpRequest` (the parsing and formatting live in :mod:`._http_wire`),
hands them to a :class:`Responder` and writes each answer with one ``sendall``. It still
is a werkzeug ``ThreadedWSGIServer`` (its socket, address family and thread-per-connection
handling, so ``HTTPServerBase`` can own it), with these differences:

- HTTP/1.1 persistent connections (and pipelining), ``TCP_NODELAY``, no per-request logging;
- request bodies: ``Content-Length`` or chunked; a declared length over the limit is answered
  413 before a byte of the body is read; ``Expect: 100-continue`` is honoured; a body past
  :data:`~._blob.SPOOL_THRESHOLD` goes to a temporary file as it arrives (never whole in memory);
- streamed answers (server-sent events) are chunked for HTTP/1.1, close-delimited for 1.0;
  a stream of known length (a served file) is sent with ``Content-Length``;
- a request with ``Upgrade: websocket`` is checked by :mod:`._websocket` before it is routed,
  and an answer carrying a WebSocket app (101) hands the connection over to it, thread and all
  (no HTTP deadline applies to it any more);
- :meth:`FastServer.shutdown` returns at once (no 0.5 s poll) and
  :meth:`FastServer.close_connections` closes idle keep-alive connections and joins their
  threads, so a stopped server leaves no thread or socket behind;
- bounded under abuse (:class:`ConnectionLimits`): a request head, a request body and each
  answer write must finish within their timeouts (408 for a late request), an idle keep-alive
  connection is closed, connections beyond the cap are answered 503 by the accept loop, and
  when ``accept()`` runs out of file descriptors the loop answers 503 with a reserved
  descriptor or backs off, while open connections keep being served. Deadlines are plain
  attributes the accept loop checks every tick, so the request path pays no extra syscall.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
import time
from typing import Any, Optional, Protocol

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family

from . import _websocket as websocket
from ._blob import EMPTY, SPOOL_THRESHOLD, Blob, BytesBlob, Spool
from ._headers import Headers
from ._http_limits import NO_DESCRIPTOR, AcceptGuard, ConnectionLimits
from ._http_wire import (
    MAX_HEADERS,
    MAX_LINE,
    STATUS_LINES,
    Folded,
    HttpRequest,
    HttpResponse,
    HttpUpgrade,
    ProtocolError,
    check_transfer_encoding,
    header_lines,
    http_date,
    parse_head,
    render_closing,
    split_target,
    tokens,
)

MAX_HEAD = MAX_LINE + 8192
RECV_SIZE = 65536
#: After answering without reading the whole body, drain at most this much (and this long)
#: before closing, so the client reads the answer rather than a connection reset.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 2.0
#: How long ``close_connections`` waits for connection threads to finish.
JOIN_SECONDS = 5.0
#: Receive buffer for a body spooled to disk.
SPOOL_RECV = 1 << 20

_HEX = re.compile("[0-9A-Fa-f]{1,16}")


class Responder(Protocol):
    """The application behind :class:`FastServer`."""

    @property
    def max_body(self) -> int: ...

    def respond(self, request: HttpRequest) -> HttpResponse:
        """Answer one request; must not raise."""

    def too_large(self, length: Optional[int], path: Optional[str] = None) -> HttpResponse:
        """The 413 answer for a body over :attr:`max_body` (``length`` when declared) sent to
        ``path`` (None when unknown)."""

    def protocol_error(self, status: int, message: str, path: Optional[str] = None) -> HttpResponse:
        """The answer to a request that is not valid HTTP (4xx/5xx, the connection closes);
        ``path`` when its head could be read."""

    def report(self, exc: BaseException) -> None:
        """Record an unexpected exception raised while serving."""


class _BodyTooLarge(Exception):
    def __init__(self, length: Optional[int]) -> None:
        super().__init__(length)
        self.length = length


class _Closed(Exception):
    """The peer went away mid-request."""


class _TimedOut(_Closed):
    """The accept loop cut the connection off: ``phase`` ran past its deadline."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


#: What each phase's deadline bounds, for the 408 answer.
_LATE = {"head": "request head", "body": "request body"}


class _Connection:
    """One client connection: a receive buffer, the request loop and its current deadline."""

    __slots__ = ("buf", "deadline", "expired", "limits", "phase", "responder", "server", "sock")

    def __init__(self, sock: socket.socket, server: FastServer) -> None:
        self.sock = sock
        self.server = server
        self.responder = server.responder
        self.limits = server.limits
        self.buf = b""
        #: ``time.monotonic()`` by which ``phase`` must end; 0.0 while a request is handled.
        self.deadline = 0.0
        self.phase = ""
        #: Set by :meth:`expire` (from the accept loop): the phase that ran out of time.
        self.expired = ""

    def _watch(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = time.monotonic() + seconds

    def expire(self) -> None:
        """Cut a late connection off (called by the accept loop, not the connection's thread).

        A read is woken by shutting the read side, so the connection's thread can still answer
        408; a stalled write is cut off in both directions.
        """
        phase = self.expired = self.phase or "handling"
        self.deadline = 0.0
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR if phase == "send" else socket.SHUT_RD)

    # -- reading --------------------------------------------------------------------------
    def _eof(self) -> _Closed:
        return _TimedOut(self.expired) if self.expired else _Closed()

    def _fill(self) -> None:
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise self._eof()
        self.buf = self.buf + data if self.buf else data

    def _head(self) -> Optional[str]:
        """The next request's head (through the last header line's end); None on a clean EOF."""
        started = False
        while True:
            buf = self.buf
            if buf[:1] in (b"\r", b"\n"):  # tolerate empty lines between requests
                buf = self.buf = buf.lstrip(b"\r\n")
            a = buf.find(b"\n\r\n")
            if a >= 0:
                b = buf.find(b"\n\n", 0, a)
                if b < 0:
                    self.buf = buf[a + 3 :]
                    return buf[: a + 1].decode("latin-1")
            else:
                b = buf.find(b"\n\n")
            if b >= 0:
                self.buf = buf[b + 2 :]
                return buf[: b + 1].decode("latin-1")
            if len(buf) > MAX_HEAD:
                raise ProtocolError(431, "Request head too large")
            if buf and not started:  # a request has begun: its head has header_timeout to arrive
                started = True
                self._watch("head", self.limits.header_timeout)
            try:
                self._fill()
            except _Closed:
                if self.buf.strip():
                    raise
                return None

    def _read(self, n: int) -> bytes:
        have = len(self.buf)
        if have >= n:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        chunks = [self.buf]  # grown as data arrives: a declared length alone allocates nothing
        self.buf = b""
        while have < n:
            data = self.sock.recv(min(n - have, 1 << 20))
            if not data:
                raise self._eof()
            chunks.append(data)
            have += len(data)
        return b"".join(chunks)

    def _body(self, n: int) -> Blob:
        """The next ``n`` bytes as a blob: in memory when small, else spooled as they arrive."""
        if n <= SPOOL_THRESHOLD:
            return BytesBlob(self._read(n))
        return Spool.filled(lambda spool: self._copy(n, spool), threshold=0)

    def _copy(self, n: int, spool: Spool) -> None:
        """Move the next ``n`` bytes into ``spool`` through one reused buffer."""
        if self.buf:
            take = self.buf[:n]
            self.buf = self.buf[len(take) :]
            spool.write(take)
            n -= len(take)
        if n <= 0:
            return
        buffer = memoryview(bytearray(min(n, SPOOL_RECV)))
        while n > 0:
            got = self.sock.recv_into(buffer, min(n, len(buffer)))
            if not got:
                raise self._eof()
            spool.write(buffer[:got])
            n -= got

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1 :]
                return line.rstrip(b"\r")
            if len(self.buf) > MAX_LINE:
                raise ProtocolError(400, "Chunk line too long")
            self._fill()

    def _chunked(self, limit: int) -> Blob:
        return Spool.filled(lambda spool: self._chunks(limit, spool))

    def _chunks(self, limit: int, spool: Spool) -> None:
        total = 0
        while True:
            size_text = self._line().split(b";", 1)[0].strip(b" \t").decode("latin-1")
            if _HEX.fullmatch(size_text) is None:
                raise ProtocolError(400, f"Malformed chunk size {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _BodyTooLarge(None)
            if size <= RECV_SIZE:
                spool.write(self._read(size))
            else:
                self._copy(size, spool)
            if self._line():
                raise ProtocolError(400, "Chunk data not followed by CRLF")
        trailers = 0
        while self._line():  # trailer fields are read and ignored
            trailers += 1
            if trailers > MAX_HEADERS:
                raise ProtocolError(431, "Too many trailer fields")

    # -- writing --------------------------------------------------------------------------
    def _send(self, response: HttpResponse, head_only: bool, keep_alive: bool, version: str) -> bool:
        """Write ``response``; False when the connection must close afterwards."""
        status = response.status
        keep_alive = keep_alive and not response.close
        stream = response.stream
        sized = stream is not None and response.length is not None
        if stream is None:
            bodiless = status < 200 or status == 204 or status == 304
            framing = "" if bodiless else f"Content-Length: {len(response.body)}\r\n"
        elif sized:
            framing = f"Content-Length: {response.length}\r\n"
        elif version == "HTTP/1.1":
            framing = "Transfer-Encoding: chunked\r\n"
        else:
            framing = ""
            keep_alive = False
        if not keep_alive:
            framing += "Connection: close\r\n"
        elif version == "HTTP/1.0":
            framing += "Connection: keep-alive\r\n"
        status_line = STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"
        text = f"{status_line}{response.head}{self.server.static_headers}Date: {http_date()}\r\n{framing}\r\n"
        try:
            head = text.encode("latin-1")
        except UnicodeEncodeError:
            head = text.encode("latin-1", "replace")
        sock = self.sock
        write_timeout = self.limits.body_timeout
        self._watch("send", write_timeout)
        if stream is None:
            body = b"" if head_only or bodiless else response.body
            if len(body) < 65536:
                sock.sendall(head + body)
            else:
                sock.sendall(head)
                sock.sendall(body)
            return keep_alive
        chunked = version == "HTTP/1.1" and not sized
        sent = 0
        try:
            sock.sendall(head)
            if head_only:
                return keep_alive
            for piece in stream:
                if not piece:
                    continue
                self._watch("send", write_timeout)  # each event has the write timeout...
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                self.deadline = 0.0  # ...and the wait for the next one has none
                sent += len(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            if sized and sent != response.length:  # the client counts bytes: end the connection
                return False
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return keep_alive

    def _linger(self) -> None:
        """Half-close and drain what the client still sends, so it can read our answer."""
        self.deadline = 0.0  # bounded by LINGER_SECONDS itself
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                data = sock.recv(RECV_SIZE)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------------------
    def serve(self) -> None:
        responder = self.responder
        limits = self.limits
        self._watch("idle", limits.header_timeout)  # a new connection's first request
        while True:
            method = ""
            head: Optional[str] = None
            path: Optional[str] = None  # known once the head parses: error answers depend on it
            try:
                head = self._head()
                if head is None:
                    return
                method, target, version, fields = parse_head(head)
                path, query, absolute_host = split_target(target)
                connection = fields.get("connection")
                if version == "HTTP/1.1":
                    keep_alive = connection is None or "close" not in tokens(connection[1])
                    if "host" not in fields:
                        raise ProtocolError(400, "An HTTP/1.1 request needs a Host header")
                else:
                    keep_alive = connection is not None and "keep-alive" in tokens(connection[1])
                if absolute_host is not None:
                    fields["host"] = ("Host", absolute_host)
                transfer = fields.get("transfer-encoding")
                length_field = fields.get("content-length")
                body: Blob = EMPTY
                if transfer is not None:
                    check_transfer_encoding(transfer[1])
                    # RFC 9112 6.1: with Content-Length too, or from HTTP/1.0, close afterwards
                    keep_alive = keep_alive and length_field is None and version == "HTTP/1.1"
                    self._watch("body", limits.body_timeout)
                    self._continue(fields, version)
                    body = self._chunked(responder.max_body)
                elif length_field is not None:
                    text = length_field[1]
                    if not text.isdigit() or not text.isascii() or len(text) > 20:
                        raise ProtocolError(400, f"Malformed Content-Length {text[:40]!r}")
                    length = int(text)
                    if length > responder.max_body:
                        raise _BodyTooLarge(length)
                    if length:
                        if len(self.buf) < length:
                            self._watch("body", limits.body_timeout)
                            self._continue(fields, version)
                        body = self._body(length)
                self.deadline = 0.0  # handling a request has no deadline (latency, recording)
                self.phase = ""
                request = HttpRequest(method, target, path, query, version, Headers.from_folded(fields), body)
                upgrade = websocket.handshake(request, responder.max_body) if "upgrade" in fields else None
                if upgrade is not None and not upgrade.accepted:
                    upgrade.refuse(self.sock)  # not a valid WebSocket handshake: never routed
                    return
                response = responder.respond(request)
                if isinstance(response, HttpUpgrade):
                    if upgrade is None:  # pragma: no cover - routing upgrades only what asks for it
                        raise ProtocolError(400, "Only an Upgrade: websocket request can become a WebSocket")
                    # The WebSocket takes this connection (socket, thread, table entry) over for
                    # good; the bounds it keeps are in _websocket's docstring (its deadline stays
                    # 0.0: no HTTP timeout cuts it off).
                    upgrade.serve(self.sock, self.buf, response, self.server.websockets)
                    return
                if upgrade is not None:
                    keep_alive = False  # refused with a plain HTTP answer: the client gives up
                if self.server.closing:
                    keep_alive = False
                if not self._send(response, method == "HEAD", keep_alive, version):
                    return
                self._watch("idle", limits.idle_timeout)
            except _TimedOut as exc:
                late = _LATE.get(exc.phase)
                if late is not None:
                    seconds = limits.header_timeout if exc.phase == "head" else limits.body_timeout
                    message = f"The {late} did not arrive within {seconds:g} s"
                    answer = responder.protocol_error(408, message, path)
                    self._send(answer, method == "HEAD", False, "HTTP/1.1")
                return
            except _BodyTooLarge as exc:
                self._send(responder.too_large(exc.length, path), method == "HEAD", False, "HTTP/1.1")
                self._linger()
                return
            except ProtocolError as exc:
                if head is not None and not method:  # the head was refused: still, HEAD gets no body
                    method = head.split(" ", 1)[0]
                answer = responder.protocol_error(exc.status, exc.message, path)
                self._send(answer, method == "HEAD", False, "HTTP/1.1")
                self._linger()  # the client may still be sending the rest of its request
                return

    def _continue(self, fields: Folded, version: str) -> None:
        expect = fields.get("expect")
        if version == "HTTP/1.1" and expect is not None and expect[1].strip().lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


class FastHandler(WSGIRequestHandler):
    """Hands the connection to :class:`_Connection`; none of the WSGI machinery runs."""

    protocol_version = "HTTP/1.1"
    server: FastServer

    def setup(self) -> None:  # no rfile/wfile wrappers: _Connection reads the socket itself
        pass

    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(sock, self.server)
        self.server.track(sock, connection)
        try:
            connection.serve()
        except (_Closed, OSError):  # the peer went away, stop() closed the socket, or it timed out
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
        self._live: dict[socket.socket, _Connection] = {}
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

    def track(self, sock: socket.socket, connection: _Connection) -> None:
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
