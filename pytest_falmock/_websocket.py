"""WebSocket connections: the opening handshake and the frame loop on a socket handed over by HTTP.

The HTTP/1.1 handler of :mod:`._http` owns every connection's socket and thread. For a request
with ``Upgrade: websocket`` it asks :func:`handshake` first: an invalid handshake is answered
(400/426) without being routed, like any request that is not valid HTTP. A valid one is routed
as usual; when the answer carries a :class:`~._reply.WebSocketApp` (status 101), the handler
calls :meth:`Handshake.serve`, which sends the 101 and runs the frame loop in the same thread
until the connection closes. Framing, masking, ping/pong and the closing handshake are
``websockets``' sans-I/O :class:`~websockets.server.ServerProtocol`; this module only moves
bytes between it, the socket and the app.

Bounds (how a WebSocket connection relates to the HTTP server's limits):

- it stays the HTTP connection it was: it keeps its entry in the server's connection table,
  so it counts against any connection cap, and :meth:`._http.FastServer.close_connections`
  (``stop()``) shuts it down like any other;
- HTTP read, idle and keep-alive timeouts do not apply: :meth:`Handshake.serve` makes the
  socket blocking without a timeout, since a realtime app may wait for its user between
  messages. It ends when either side closes it, when the mock resets (each test's
  connections are closed with 1001 when the next test starts) or when the server stops;
- after a close frame is sent the peer has :data:`CLOSE_TIMEOUT` seconds to finish the
  closing handshake, and :meth:`LiveWebSockets.close_all` gives all peers
  :data:`CLOSE_GRACE` seconds in total before it cuts their sockets;
- a message larger than ``Settings.max_input`` (16 MiB, or the body limit when lower) closes the
  connection with 1009: ``websockets`` refuses a frame by its declared length, before reading it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Optional

from websockets.datastructures import Headers as WsHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ._http_wire import HttpRequest, HttpUpgrade, wants_websocket
from ._reply import Message, Outgoing, WebSocketApp

RECV_SIZE = 65536
#: Seconds the peer has to answer our close frame (or to close TCP after the closing handshake).
CLOSE_TIMEOUT = 5.0
#: Seconds :meth:`LiveWebSockets.close_all` waits, in total, for peers to finish closing.
CLOSE_GRACE = 1.0
#: Close codes (RFC 6455 7.4.1).
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
INVALID_DATA = 1007

LOGGER = logging.getLogger("pytest_falmock.websocket")


def handshake(request: HttpRequest, max_size: int) -> Optional[Handshake]:
    """The opening handshake ``request`` asks for; None when it is a plain HTTP request."""
    if not wants_websocket(request.headers):
        return None
    return Handshake(request, max_size)


class Handshake:
    """An opening handshake, checked by ``websockets``; :attr:`accepted` when valid."""

    def __init__(self, request: HttpRequest, max_size: int) -> None:
        self.max_size = max_size
        self.protocol = ServerProtocol(max_size=max_size, logger=LOGGER)
        asked = Request(request.target, WsHeaders(list(request.headers.items())))
        self.response = self.protocol.accept(asked)
        answer = self.response.headers  # a multidict: setting a name adds a value
        if "Server" in answer:
            del answer["Server"]
        answer["Server"] = "fal_mock"

    @property
    def accepted(self) -> bool:
        return self.response.status_code == 101

    def refuse(self, sock: socket.socket) -> None:
        """Answer an invalid handshake (the library's 400/426 text) and let the connection close."""
        self.protocol.send_response(self.response)
        sock.sendall(b"".join(self.protocol.data_to_send()))

    def serve(self, sock: socket.socket, buffered: bytes, answer: HttpUpgrade, live: LiveWebSockets) -> None:
        """Send the 101 (with ``answer``'s headers) and serve ``answer.app`` until the end."""
        for line in answer.head.split("\r\n"):
            name, _, value = line.partition(": ")
            if name and name not in self.response.headers:
                self.response.headers[name] = value
        self.protocol.send_response(self.response)
        head = b"".join(self.protocol.data_to_send())
        # The handshake protocol waited for a request it never parsed (routing did): frames go
        # through a protocol created open, with no extension negotiated.
        framing = ServerProtocol(state=State.OPEN, max_size=self.max_size, logger=LOGGER)
        connection = WebSocketConnection(sock, framing, answer.app, self.max_size)
        live.add(connection)
        try:
            connection.run(head, buffered)
        finally:
            live.discard(connection)


class WebSocketConnection:
    """One open WebSocket: the frame loop (in the connection's thread) and a thread-safe close."""

    def __init__(
        self, sock: socket.socket, protocol: ServerProtocol, app: WebSocketApp, max_size: int
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self.app = app
        self.max_size = max_size
        #: The connection's own thread (the HTTP server's), which runs the loop.
        self.thread = threading.current_thread()
        self._lock = threading.Lock()  # the protocol object and writes to the socket
        #: A close frame went out (the app's, a failure's, or close_all()'s).
        self.closing = False
        self._buffer = bytearray()  # the message being assembled from its fragments
        self._text = False

    # -- the loop (the connection's own thread) -------------------------------------------------
    def run(self, head: bytes, buffered: bytes) -> None:
        """Send the handshake answer ``head``, then serve frames until the connection ends."""
        sock = self.sock
        protocol = self.protocol
        try:
            sock.settimeout(None)  # HTTP timeouts end here: a WebSocket may stay idle
            with self._lock:
                sock.sendall(head)
            self._send(self.app.opened())
            if buffered:  # frames that arrived with the handshake
                self._receive(buffered)
            while protocol.state is not State.CLOSED:
                if protocol.close_expected():  # a close frame went out: the end is near
                    sock.settimeout(CLOSE_TIMEOUT)
                data = sock.recv(RECV_SIZE)
                if not data:
                    with self._lock:
                        protocol.receive_eof()
                        self._flush()
                    return
                self._receive(data)
        except OSError:  # the peer went away or timed out, or close_all() / stop() cut the socket
            return

    def _receive(self, data: bytes) -> None:
        with self._lock:
            self.protocol.receive_data(data)
            events = self.protocol.events_received()
            self._flush()  # pongs and the answer to a close frame
        for event in events:
            if not isinstance(event, Frame):  # pragma: no cover - only frames follow the handshake
                continue
            if self.closing or event.opcode is Opcode.CLOSE:
                return  # after a close frame (ours or theirs) nothing more is answered
            message = self._assemble(event)
            if message is not None:
                self._send(self.app.received(message))

    def _assemble(self, frame: Frame) -> Optional[Message]:
        """A complete message once its last fragment arrived; None meanwhile (and for control frames)."""
        if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            self._buffer, self._text = bytearray(), frame.opcode is Opcode.TEXT
        elif frame.opcode is not Opcode.CONT:
            return None
        self._buffer += frame.data  # one buffer: empty fragments cost nothing
        if len(self._buffer) > self.max_size:  # pragma: no cover - websockets closes first (1009)
            self._fail(MESSAGE_TOO_BIG, f"message over {self.max_size} bytes")
            return None
        if not frame.fin:
            return None
        data, self._buffer = bytes(self._buffer), bytearray()
        if not self._text:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:  # websockets leaves UTF-8 to the application
            self._fail(INVALID_DATA, "text message is not valid UTF-8")
            return None

    def _fail(self, code: int, reason: str) -> None:
        with self._lock:
            if self.protocol.state is State.OPEN:
                self.closing = True
                self.protocol.fail(code, reason)
                self._flush()

    def _send(self, outgoing: Outgoing) -> None:
        with self._lock:
            self._write(outgoing)

    def _write(self, outgoing: Outgoing) -> None:
        """Queue and send ``outgoing`` (the lock held); nothing once a close frame went out."""
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            return
        for message in outgoing.messages:
            if isinstance(message, str):
                protocol.send_text(message.encode())
            else:
                protocol.send_binary(message)
        if outgoing.close is not None:
            code, reason = outgoing.close
            self.closing = True
            protocol.send_close(code, reason)
        self._flush()

    def _flush(self) -> None:
        """Write what the protocol produced (the lock held); an empty chunk means half-close."""
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)
            else:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)

    # -- closing from another thread (reset, stop) ------------------------------------------------
    def close(self, code: int, reason: str, deadline: float) -> None:
        """Send a close frame, unless the loop holds the socket past ``deadline`` (e.g. a peer
        that reads nothing while we write): then :meth:`abort` does the job."""
        if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._write(Outgoing(close=(code, reason)))
            except OSError:
                pass
            finally:
                self._lock.release()

    def abort(self) -> None:
        """Cut the socket: the loop's ``recv`` (or ``sendall``) fails and the loop ends."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class LiveWebSockets:
    """The open WebSocket connections of one server, so they can be closed together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[WebSocketConnection] = set()

    def add(self, connection: WebSocketConnection) -> None:
        with self._lock:
            self._live.add(connection)

    def discard(self, connection: WebSocketConnection) -> None:
        with self._lock:
            self._live.discard(connection)

    def close_all(self, code: int = GOING_AWAY, reason: str = "", grace: float = CLOSE_GRACE) -> None:
        """Close every connection with ``code``; wait up to ``grace`` seconds in total for the
        closing handshakes, then cut the sockets of peers that did not answer. Returns once
        their threads have ended (and left the server's connection table)."""
        with self._lock:
            live = [c for c in self._live if c.thread is not threading.current_thread()]
        if not live:
            return
        deadline = time.monotonic() + grace
        for connection in live:
            connection.close(code, reason, deadline)
        for connection in live:
            connection.thread.join(max(0.0, deadline - time.monotonic()))
            if connection.thread.is_alive():
                connection.abort()
                connection.thread.join(CLOSE_TIMEOUT)
