"""Headers: a small immutable, case-insensitive mapping (what the journal hands out), the rules
for the extra response headers a stub may set, and reading ``Accept``."""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple, TypeVar, Union, overload

from ._constants import ERROR_TYPE_HEADER, REDACTED, REQUEST_ID_HEADER

_T = TypeVar("_T")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-fal-key"})


class Headers(Mapping[str, str]):
    """Read-only headers; ``headers["Authorization"]`` and ``headers["authorization"]`` agree."""

    __slots__ = ("_items", "_size")

    def __init__(self, items: Iterable[Tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        self._size: Optional[int] = None
        for key, value in items:
            self._items.setdefault(key.lower(), (key, value))

    @classmethod
    def from_folded(cls, items: dict[str, tuple[str, str]], size: Optional[int] = None) -> Headers:
        """Adopt ``{lowercased name: (name as sent, value)}`` as is (the HTTP parser's fast path);
        ``size`` is the length of the request head they came in."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._size = size
        return headers

    @property
    def wire_size(self) -> int:
        """About the bytes these headers take: the request head they came in, else their text."""
        if self._size is None:
            self._size = sum(len(name) + len(value) + 4 for name, value in self._items.values())
        return self._size

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    @overload
    def get(self, key: str, /) -> Optional[str]: ...
    @overload
    def get(self, key: str, /, default: Union[str, _T]) -> Union[str, _T]: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        """Like ``Mapping.get``, without raising and catching ``KeyError`` on a miss."""
        item = self._items.get(key.lower())
        return default if item is None else item[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"

    def redacted(self) -> Headers:
        """A copy with credentials replaced by ``[REDACTED]`` (``self`` when there are none)."""
        if SECRET_HEADERS.isdisjoint(self._items):
            return self  # immutable, so sharing is safe
        copy = Headers((k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in self.items())
        copy._size = self._size
        return copy


# -- response headers a stub may set --------------------------------------------------------
#: Written by the HTTP layer itself: a reply can never set them.
FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "keep-alive", "upgrade", "trailer", "te"}
)
#: Set by the mock on every answer; a stub's ``headers`` may not replace them.
MOCK_HEADERS = frozenset({"content-type", "server", REQUEST_ID_HEADER, ERROR_TYPE_HEADER})
MAX_STUB_HEADERS = 32
MAX_HEADER_VALUE = 4096
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")


class HeaderError(ValueError):
    """A stub's ``headers`` that a response cannot carry; ``requirement`` says what it must be."""

    def __init__(self, requirement: str, value: Any) -> None:
        super().__init__(f"headers must be {requirement}, got {value!r}")
        self.requirement = requirement
        self.value = value


def stub_headers(headers: Any) -> dict[str, str]:
    """``headers`` validated as extra response headers of a stub (a fresh dict).

    Names are HTTP tokens, values printable ASCII (no CR or LF: they cannot split the answer),
    and nothing the HTTP layer or the mock owns - framing, ``Content-Type``, CORS, the request
    id or the error type (set with ``error_type``) - can be replaced.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise HeaderError("a dict of header names to string values", headers)
    if len(headers) > MAX_STUB_HEADERS:
        raise HeaderError(f"at most {MAX_STUB_HEADERS} headers", f"{len(headers)} headers")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise HeaderError("keyed by valid header names (letters, digits and !#$%&'*+-.^_`|~)", name)
        folded = name.lower()
        if folded in seen:
            raise HeaderError("free of duplicate names (they are case-insensitive)", name)
        seen.add(folded)
        if folded == ERROR_TYPE_HEADER:
            raise HeaderError(f"free of {name} (set it with error_type=)", name)
        if folded in FRAMING_HEADERS or folded in MOCK_HEADERS or folded.startswith("access-control-"):
            requirement = "free of headers the mock sets itself (framing, Content-Type, CORS, request id)"
            raise HeaderError(requirement, name)
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or not _VALUE.fullmatch(value):
            requirement = f"string values of printable ASCII (at most {MAX_HEADER_VALUE} characters)"
            raise HeaderError(requirement, {name: value})
        out[name] = value
    return out


def accepts_event_stream(headers: Headers) -> tuple[bool, bool]:
    """``(named, accepted)`` for the request's ``Accept``: whether it names ``text/event-stream``,
    and whether an event stream is acceptable at all (named, ``text/*``, ``*/*`` or no ``Accept``).
    A media range with ``q=0`` refuses."""
    accept = headers.get("accept")
    if accept is None or not accept.strip():
        return False, True
    named = accepted = False
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if _refused(params):
            continue
        media = media.lower()
        if media == "text/event-stream":
            named = accepted = True
        elif media in ("*/*", "text/*"):
            accepted = True
    return named, accepted


def _refused(params: list[str]) -> bool:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value.strip()) <= 0
            except ValueError:
                return False
    return False
