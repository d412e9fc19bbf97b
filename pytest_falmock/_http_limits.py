"""The HTTP server's bounds, kept by its accept loop: deadlines, the connection cap, descriptors.

:class:`ConnectionLimits` says how long a request head, a request body, an answer write and an
idle keep-alive wait may take, and how many connections are served at once.
:class:`AcceptGuard` is the accept loop's side of it (one thread, no extra syscall on the
request path):

- every tick it looks at each connection's deadline (a plain attribute the connection's
  thread sets as it moves from phase to phase) and cuts late ones off;
- a connection beyond the cap is answered 503 on the spot and left to linger briefly (reading
  and discarding what the client still sends, so it reads the answer instead of a reset);
- when ``accept()`` fails for want of a file descriptor (``EMFILE``), one reserved descriptor
  is given up to accept the waiting client and answer it 503; when even that fails the loop
  pauses accepting (10 ms, doubling up to 1 s) instead of spinning, and open connections keep
  being served by their own threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol

#: Refused connections lingering at once, at most (more are closed at once), and for how long.
MAX_LINGERING = 64
LINGER_SECONDS = 2.0
#: ``accept()`` back-off while no file descriptor is free: first and longest pause.
MIN_BACKOFF = 0.01
MAX_BACKOFF = 1.0
NO_DESCRIPTOR = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on client connections (the documented defaults are :class:`._settings.Settings`')."""

    #: Seconds a request head may take from its first byte (a new connection's first request too).
    header_timeout: float
    #: Seconds a request body may take, and each write of an answer.
    body_timeout: float
    #: Seconds a keep-alive connection may sit idle between requests.
    idle_timeout: float
    #: Connections served at once; more are answered 503.
    max_connections: int

    @property
    def tick(self) -> float:
        """How often deadlines are checked: a quarter of the shortest timeout, 10 ms to 1 s."""
        shortest = min(self.header_timeout, self.body_timeout, self.idle_timeout)
        return min(1.0, max(0.01, shortest / 4))


class Deadlined(Protocol):
    """A connection as the guard sees it."""

    #: ``time.monotonic()`` by which the connection's current phase must end (0.0: no deadline).
    deadline: float

    def expire(self) -> None:
        """Cut the connection off (called from the accept loop's thread)."""


def _reserve() -> Optional[int]:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class AcceptGuard:
    """The accept loop's bookkeeping; ``answer(status, message)`` renders a closing answer."""

    def __init__(self, limits: ConnectionLimits, answer: Callable[[int, str], bytes]) -> None:
        self.limits = limits
        self._answer = answer
        self._lingering: dict[socket.socket, float] = {}
        self._reserve = _reserve()
        self._backoff = 0.0
        #: ``time.monotonic()`` until which the loop does not call ``accept()``.
        self.paused_until = 0.0
        self._next_tick = 0.0

    # -- time ---------------------------------------------------------------------------------
    def wait(self, now: float) -> float:
        """Seconds the loop may block in ``select()`` before the guard needs it again."""
        until = self._next_tick
        if self.paused_until > now:
            until = min(until, self.paused_until)
        return max(0.0, until - now)

    def tick(self, now: float, connections: Iterable[Deadlined], selector: selectors.BaseSelector) -> None:
        """Cut off connections past their deadline and drop refused ones done lingering."""
        if now < self._next_tick:
            return
        self._next_tick = now + self.limits.tick
        for connection in connections:
            deadline = connection.deadline
            if deadline and deadline < now:
                connection.expire()
        for sock, until in list(self._lingering.items()):
            if until < now:
                self._drop(sock, selector)

    # -- refusing -------------------------------------------------------------------------------
    def refuse(
        self, sock: socket.socket, status: int, message: str, selector: selectors.BaseSelector
    ) -> None:
        """Answer ``sock`` at once without a thread, then let it linger (bounded) before closing."""
        try:
            sock.setblocking(False)
            sock.send(self._answer(status, message))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._lingering) >= MAX_LINGERING:
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + LINGER_SECONDS
        selector.register(sock, selectors.EVENT_READ, self)

    def drain(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        """Read and discard what a refused client still sends; close at its end."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock, selector)

    def _drop(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        self._lingering.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(sock)
        sock.close()

    # -- file descriptors -----------------------------------------------------------------------
    def accepted(self) -> None:
        """``accept()`` worked: the back-off starts over."""
        self._backoff = 0.0

    def out_of_descriptors(self, listener: socket.socket, selector: selectors.BaseSelector) -> None:
        """``accept()`` failed with ``EMFILE`` (or the like): answer one client 503, or pause."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                sock: Optional[socket.socket] = listener.accept()[0]
            except OSError:
                sock = None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(
                        self._answer(
                            503,
                            "fal_mock has no file descriptor left for a new connection "
                            "(too many open files); try again shortly",
                        )
                    )
                sock.close()  # no lingering: that would hold the descriptor just freed
            self._reserve = _reserve()
            if sock is not None and self._reserve is not None:
                return
        self._backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._backoff * 2))
        self.paused_until = time.monotonic() + self._backoff

    def close_lingering(self, selector: selectors.BaseSelector) -> None:
        for sock in list(self._lingering):
            self._drop(sock, selector)

    def release(self) -> None:
        """Give the reserved descriptor back (the server is closing)."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
