"""The HTTP/1.1 wire format, without sockets: request heads in, response heads out.

Pure functions and small value types shared by the server in :mod:`._http` and the
application behind it (:mod:`._server`): :func:`parse_head` and :func:`split_target` read a
request head, :class:`HttpRequest` and :class:`HttpResponse` carry a request and its answer,
:func:`header_lines`, :data:`STATUS_LINES` and :func:`http_date` format an answer's head
(:func:`render_closing` a whole closing answer), and :class:`ProtocolError` is what a request
that is not valid HTTP raises (RFC 9112's refusals: control characters, a missing or repeated
``Host``, a ``Transfer-Encoding`` other than ``chunked`` (:func:`check_transfer_encoding`), an
unknown version).
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Dict, Iterable, Iterator, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ._blob import Blob
from ._headers import Headers
from ._reply import WebSocketApp

#: Longest request line or header line, and most header lines, accepted.
MAX_LINE = 65536
MAX_HEADERS = 100

STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in HTTPStatus}
_TOKEN_CHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(f"[{_TOKEN_CHARS}]+")
#: A field value's characters: anything but control characters (HTAB allowed), RFC 9110 5.5.
_VALUE = r"[^\x00-\x08\x0a-\x1f\x7f]*"
#: One header field line: name, optional whitespace, value (no CR, LF or other CTL), line end.
_FIELD = re.compile(f"([{_TOKEN_CHARS}]+):[ \\t]*({_VALUE})\\r?\\n")
_FIELDS = re.compile(f"(?:[{_TOKEN_CHARS}]+:{_VALUE}\\r?\\n)*")
_FIELD_NAME = re.compile(f"[{_TOKEN_CHARS}]+:")
#: Control characters (and space) that may not appear in a request target.
_TARGET_CTL = re.compile("[\x00-\x20\x7f]")
#: ``HTTP/1.x`` (one digit each, RFC 9112 2.3); other syntactically valid versions get 505.
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
_ANY_VERSION = re.compile(r"HTTP/[0-9]+(?:\.[0-9]+)?")
#: Fields that may appear only once (RFC 9112 3.2 and 6.1; Content-Length is checked for agreement).
_SINGLE = frozenset({"host", "transfer-encoding"})


class HttpRequest:
    """One parsed request. ``path`` is percent-decoded; ``query`` is the raw query string;
    ``body`` is in memory when small, in a temporary file when large (:mod:`._blob`)."""

    __slots__ = ("body", "headers", "method", "path", "query", "target", "version")

    def __init__(
        self, method: str, target: str, path: str, query: str, version: str, headers: Headers, body: Blob
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body


class HttpResponse:
    """What a :class:`._http_connection.Responder` answers: a status, header lines and a body or a stream.

    ``head`` holds complete header lines (``"Name: value\r\n"`` each); the server adds the
    status line, ``Date``, the framing (``Content-Length`` or chunking) and ``Connection``.
    A ``stream`` with a ``length`` (a served file) is sent with ``Content-Length``, not chunked.
    """

    __slots__ = ("body", "close", "head", "length", "status", "stream")

    def __init__(
        self,
        status: int,
        head: str,
        body: bytes = b"",
        stream: Optional[Iterator[bytes]] = None,
        close: bool = False,
        length: Optional[int] = None,
    ) -> None:
        self.status = status
        self.head = head
        self.body = body
        self.stream = stream
        self.close = close
        self.length = length


class HttpUpgrade(HttpResponse):
    """A 101 answer: the connection becomes a WebSocket served by ``app`` (:mod:`._websocket`)."""

    __slots__ = ("app",)

    def __init__(self, head: str, app: WebSocketApp) -> None:
        super().__init__(101, head)
        self.app = app


def header_lines(headers: Iterable[tuple[str, str]]) -> str:
    """``"Name: value\r\n"`` lines; CR and LF in names or values cannot split the answer."""
    items = list(headers)
    text = "".join(f"{name}: {value}\r\n" for name, value in items)
    if text.count("\n") != len(items) or text.count("\r") != len(items):
        text = "".join(f"{_one_line(name)}: {_one_line(value)}\r\n" for name, value in items)
    return text


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


class ProtocolError(Exception):
    """A request that is not valid HTTP: answered ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` header value, computed at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def split_target(target: str) -> tuple[str, str, Optional[str]]:
    """``target`` -> (percent-decoded path, raw query, host of an absolute-form target).

    The same path werkzeug's ``Request.path`` gives: decoded, one leading slash.
    """
    host: Optional[str] = None
    if target.startswith("/") and not target.startswith("//") and "#" not in target:
        raw_path, _, query = target.partition("?")
    else:
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. "//[x": not a URL, so take it as a plain path
            raw_path, _, query = target.partition("#")[0].partition("?")
            return _decoded(raw_path), query, None
        query = parts.query
        if not parts.scheme and parts.netloc:  # "//x/y" is a path, not a network location
            raw_path = f"/{parts.netloc}{parts.path}"
        else:
            raw_path = parts.path
            if parts.scheme and parts.netloc:
                host = parts.netloc
    return _decoded(raw_path), query, host


def _decoded(raw_path: str) -> str:
    path = unquote(raw_path) if "%" in raw_path else raw_path
    if not path.startswith("/") or path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path


Folded = Dict[str, Tuple[str, str]]


def parse_head(head: str) -> tuple[str, str, str, Folded]:
    """A request head (latin-1 text up to its empty line) -> (method, target, version, fields).

    ``fields`` maps each lowercased name to (name as sent, value); repeated fields are joined
    with commas, as werkzeug does.
    """
    end = head.find("\n")
    line = head[:end].rstrip("\r")
    if len(line) > MAX_LINE:
        raise ProtocolError(414, "Request line too long")
    parts = line.split(" ")
    if len(parts) != 3:
        parts = [part for part in parts if part]  # SP-delimited (RFC 9112 3); extra spaces tolerated
        if len(parts) != 3:
            raise ProtocolError(400, f"Malformed request line {line[:200]!r}")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise ProtocolError(400, f"Malformed method {method[:100]!r}")
    if _TARGET_CTL.search(target) is not None:
        raise ProtocolError(400, f"Control character in the request target {target[:200]!r}")
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        version = _version(version)
    block = head[end + 1 :]
    folded: Folded = {}
    if not block:
        return method, target, version, folded
    if _FIELDS.fullmatch(block) is None or len(block) > MAX_LINE:
        _check_lines(block)
    fields = _FIELD.findall(block)
    if len(fields) > MAX_HEADERS:
        raise ProtocolError(431, f"More than {MAX_HEADERS} request headers")
    for name, value in fields:
        if value[-1:] in (" ", "\t"):
            value = value.rstrip(" \t")
        key = name.lower()
        seen = folded.get(key)
        if seen is None:
            folded[key] = (name, value)
        elif key == "content-length":
            if seen[1] != value:
                raise ProtocolError(400, "Conflicting Content-Length headers")
        elif key in _SINGLE:
            raise ProtocolError(400, f"More than one {seen[0]} header")
        else:
            folded[key] = (seen[0], f"{seen[1]},{value}")
    return method, target, version, folded


def _version(version: str) -> str:
    """``HTTP/1.x`` -> the version answered (1.0, or 1.1 for x >= 1); 505 or 400 otherwise."""
    exact = _VERSION.fullmatch(version)
    if exact is not None and exact.group(1) == "1":
        return "HTTP/1.0" if exact.group(2) == "0" else "HTTP/1.1"
    if _ANY_VERSION.fullmatch(version) is not None:
        raise ProtocolError(505, f"HTTP version {version} is not supported")
    raise ProtocolError(400, f"Malformed HTTP version {version[:100]!r}")


def _check_lines(block: str) -> None:
    """Name the first bad header line (the slow path, only for a bad or very long head)."""
    for line in block.split("\n")[:-1]:
        if len(line) > MAX_LINE:
            raise ProtocolError(431, "Request header line too long")
        if _FIELDS.fullmatch(line + "\n") is None:
            line = line.rstrip("\r")
            named = _FIELD_NAME.match(line) is not None
            problem = "Control character in header line" if named else "Malformed header line"
            raise ProtocolError(400, f"{problem} {line[:200]!r}")
    if _FIELDS.fullmatch(block) is None:  # pragma: no cover - a bad block has a bad line
        raise ProtocolError(400, "Malformed header block")


def tokens(value: str) -> set[str]:
    """The lowercased comma-separated tokens of a field value (e.g. ``Connection``)."""
    return {token.strip().lower() for token in value.split(",")}


def wants_websocket(headers: Headers) -> bool:
    """The request asks to switch to the WebSocket protocol (``Upgrade: websocket``)."""
    upgrade = headers.get("upgrade")
    return upgrade is not None and "websocket" in tokens(upgrade)


def check_transfer_encoding(value: str) -> None:
    """Only ``chunked`` is understood (RFC 9112 6.1): 501 for other codings, 400 for a repeat."""
    if value.lower() == "chunked":
        return
    codings = [coding.strip().lower() for coding in value.split(",")]
    if codings.count("chunked") > 1:
        raise ProtocolError(400, f"Transfer-Encoding {value!r} applies chunked twice")
    raise ProtocolError(501, f"Transfer-Encoding {value!r} is not supported (only chunked)")


def render_closing(response: HttpResponse, static_headers: str) -> bytes:
    """The bytes of an answer after which the connection closes (the accept loop's refusals)."""
    status_line = STATUS_LINES.get(response.status) or f"HTTP/1.1 {response.status} Unknown\r\n"
    head = (
        f"{status_line}{response.head}{static_headers}Date: {http_date()}\r\n"
        f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1", "replace") + response.body
