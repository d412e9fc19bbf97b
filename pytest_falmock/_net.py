"""Names and outgoing HTTP: one loopback rule, and the one way the mock opens a URL.

Everything the mock sends out goes through :func:`open_url`: redirects are never followed (a
3xx is the answer); loopback URLs go direct, others through the environment's proxies.
:func:`fetch` (webhook deliveries, recording upstream) also bounds the whole exchange in time (a
watchdog shuts the socket down at the deadline, whatever the server trickles) and the answer
body in size; media downloads stream through :func:`open_url` with their own bounds.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

#: Read answers in pieces this large (so the size cap holds without reading past it).
_PIECE = 64 * 1024


# -- names --------------------------------------------------------------------------------------
def host_name(value: str) -> Optional[str]:
    """A bare host name or IP address, canonical (lower case, IPv6 without brackets); else None."""
    host = value.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_label(label) for label in labels):
        return None
    return host.rstrip(".")


def _label(label: str) -> bool:
    return 0 < len(label) <= 63 and label.isascii() and all(c.isalnum() or c in "-_" for c in label)


def host_of(authority: str) -> Optional[str]:
    """The host of a ``Host`` header value (``name[:port]``, ``[v6][:port]``), canonical; else None."""
    value = authority.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not _port(value[end + 1 :])):
            return None
        return host_name(value[: end + 1])
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    return host_name(name)


def _port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback address literals (``127.0.0.0/8``, ``::1``) only.

    Other names (``*.localhost`` included) are not trusted without resolving them, and the mock
    never resolves a name to decide.
    """
    name = host_name(host)
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback(url: str) -> bool:
    """True when ``url`` (or an ``Origin`` value) names a loopback host (see :func:`is_loopback_host`)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and is_loopback_host(host)


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the default port left out), lower case."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


# -- outgoing requests --------------------------------------------------------------------------
class AnswerTooLarge(Exception):
    """The answer body exceeds the size the caller accepts."""


class _Watchdog:
    """Shuts down the sockets of one exchange when its time is up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.name = "fal_mock-deadline"

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            # the plain socket's shutdown, also for a TLS socket (whose own method unwraps it)
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """Mixed into the connection classes: register each socket with the request's watchdog."""

    sock: Any

    def __init__(self, *args: Any, watchdog: Optional[_Watchdog] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog
        if watchdog is not None:
            create = self._create_connection  # type: ignore[has-type]

            def watched_create(*a: Any, **kw: Any) -> socket.socket:
                sock: socket.socket = create(*a, **kw)
                watchdog.watch(sock)
                return sock

            self._create_connection = watched_create

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if self._watchdog is not None:  # the TLS socket that replaced the plain one
            self._watchdog.watch(self.sock)


class _HTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, watchdog=getattr(req, "watchdog", None))


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = getattr(self, "_context", None)
        return self.do_open(_HTTPSConnection, req, context=context, watchdog=getattr(req, "watchdog", None))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer like any other: never followed (it raises ``HTTPError``)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_HANDLERS = (_HTTPHandler, _HTTPSHandler, _NoRedirect)
#: Never through an HTTP proxy (a proxy would see loopback traffic, or refuse it).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), *_HANDLERS)
#: The environment's proxies apply (talking to the real fal.ai from behind a corporate proxy).
_PROXIED = urllib.request.build_opener(*_HANDLERS)


def _read(response: Any, limit: int) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while True:
        piece = response.read(min(_PIECE, limit + 1 - size))
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > limit:
            raise AnswerTooLarge(f"the answer body exceeds the {limit}-byte limit")
        pieces.append(piece)


def open_url(request: urllib.request.Request, timeout: float) -> Any:
    """Open ``request`` (a response to read and close): loopback URLs directly, others through the
    environment's proxies; a 3xx raises ``HTTPError`` (never followed). ``timeout`` bounds each
    socket operation; :func:`fetch` bounds the whole exchange."""
    opener = _DIRECT if is_loopback(request.full_url) else _PROXIED
    return opener.open(request, timeout=timeout)


def fetch(request: urllib.request.Request, timeout: float, max_bytes: int) -> tuple[int, Message, bytes]:
    """``(status, headers, body)`` of ``request``; any status, 3xx included, is an answer.

    The whole exchange (connect to last byte) takes at most about ``timeout`` seconds: past it,
    ``TimeoutError``. A body over ``max_bytes`` raises :class:`AnswerTooLarge`; ``max_bytes=0``
    reads no body. Other failures raise ``OSError``/``http.client.HTTPException``/``ValueError``.
    """
    started = time.monotonic()
    with _Watchdog(timeout) as watchdog:
        request.watchdog = watchdog  # type: ignore[attr-defined]
        try:
            try:
                with open_url(request, timeout) as response:
                    status, headers = response.status, response.headers
                    body = _read(response, max_bytes) if max_bytes else b""
            except urllib.error.HTTPError as exc:
                with exc:
                    status, headers = exc.code, exc.headers
                    body = _read(exc, max_bytes) if max_bytes else b""
        except (OSError, http.client.HTTPException, ValueError):
            if watchdog.expired or time.monotonic() - started >= timeout:
                raise TimeoutError(f"timed out after {timeout:g} s") from None
            raise
        if watchdog.expired:  # a read cut off at the deadline may look like a clean end
            raise TimeoutError(f"timed out after {timeout:g} s")
    return status, headers, body


def foreign_page(headers: Mapping[str, str]) -> Optional[str]:
    """Why a request comes from a web page that is not on this machine; None when it does not.

    A browser names the page in ``Origin`` (every cross-origin fetch, every POST); a request it
    sends without one (a no-cors GET) still says ``Sec-Fetch-Site: cross-site``.
    """
    page = headers.get("origin")
    if page is not None:
        return None if is_loopback(page) else f"the web page at Origin {page!r}"
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "a cross-site web page (Sec-Fetch-Site: cross-site)"
    return None


def exposure_warning(host: str, port: int) -> Optional[str]:
    """What binding ``host`` risks, when it is not a loopback address; None when it is."""
    if is_loopback_host(host):
        return None
    where = "every network interface" if host_name(host) in ("0.0.0.0", "::") else host
    return (
        f"fal_mock is listening on {where} (port {port}), not only on this machine: anyone who can "
        "reach that address can drive the mock, read its journal and uploads, and, while "
        "recording, spend your fal credits. Bind 127.0.0.1 unless other machines must reach it "
        "(they must also name an allowed Host: --allow-host)."
    )
