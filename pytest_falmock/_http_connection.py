"""One client connection of the lean HTTP/1.1 server: read requests, answer them, keep alive.

:class:`Connection` reads each request straight off the socket into
:class:`~._http_wire.HttpRequest` (the parsing and formatting live in :mod:`._http_wire`), hands
it to the :class:`Responder` and writes the answer with one ``sendall``:

- HTTP/1.1 persistent connections (and pipelining), no per-request logging;
- request bodies: ``Content-Length`` or chunked; a declared length over the limit is answered
  413 before a byte of the body is read; ``Expect: 100-continue`` is honoured; a body past
  :data:`~._blob.SPOOL_THRESHOLD` goes to a temporary file as it arrives (never whole in memory);
- streamed answers (server-sent events) are chunked for HTTP/1.1, close-delimited for 1.0;
  a stream of known length (a served file) is sent with ``Content-Length``;
- a request with ``Upgrade: websocket`` is checked by :mod:`._websocket` before it is routed,
  and an answer carrying a WebSocket app (101) hands the connection over to it, thread and all
  (no HTTP deadline applies to it any more);
- each phase (request head, request body, answer write, idle keep-alive) has a deadline, a
  plain attribute the accept loop of :class:`._http.FastServer` checks every tick
  (:meth:`Connection.expire`), so the request path pays no extra syscall.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from typing import Optional, Protocol

from . import _websocket as websocket
from ._blob import EMPTY, SPOOL_THRESHOLD, Blob, BytesBlob, Spool
from ._headers import Headers
from ._http_limits import ConnectionLimits
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
    http_date,
    parse_head,
    split_target,
    tokens,
)

MAX_HEAD = MAX_LINE + 8192
RECV_SIZE = 65536
#: After answering without reading the whole body, drain at most this much (and this long)
#: before closing, so the client reads the answer rather than a connection reset.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 2.0
#: Receive buffer for a body spooled to disk.
SPOOL_RECV = 1 << 20

_HEX = re.compile("[0-9A-Fa-f]{1,16}")


class Responder(Protocol):
    """The application behind the server (:class:`._server.FalMockServer`)."""

    @property
    def max_body(self) -> int: ...

    @property
    def max_input(self) -> int:
        """The largest WebSocket message accepted (1009 beyond)."""

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


class Host(Protocol):
    """What a connection needs of the server that accepted it (:class:`._http.FastServer`)."""

    responder: Responder
    limits: ConnectionLimits
    #: Header lines every answer carries (``Server: ...``).
    static_headers: str
    #: True once the server is stopping: answer, then close.
    closing: bool
    websockets: websocket.LiveWebSockets


class _BodyTooLarge(Exception):
    def __init__(self, length: Optional[int]) -> None:
        super().__init__(length)
        self.length = length


class Closed(Exception):
    """The peer went away mid-request."""


class _TimedOut(Closed):
    """The accept loop cut the connection off: ``phase`` ran past its deadline."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


#: What each phase's deadline bounds, for the 408 answer.
_LATE = {"head": "request head", "body": "request body"}


class Connection:
    """One client connection: a receive buffer, the request loop and its current deadline."""

    __slots__ = ("buf", "deadline", "expired", "limits", "phase", "responder", "server", "sock")

    def __init__(self, sock: socket.socket, server: Host) -> None:
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
    def _eof(self) -> Closed:
        return _TimedOut(self.expired) if self.expired else Closed()

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
            except Closed:
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
                headers = Headers.from_folded(fields, len(head))
                request = HttpRequest(method, target, path, query, version, headers, body)
                upgrade = websocket.handshake(request, responder.max_input) if "upgrade" in fields else None
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
