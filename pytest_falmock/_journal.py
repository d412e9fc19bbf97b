"""Immutable records handed to users: journal entries, uploads, unmatched requests, webhooks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Tuple, Union

from ._blob import Blob, BytesBlob
from ._headers import Headers
from ._stubs import printable, summarize


@dataclass(frozen=True)
class FalRequest:
    """One request the mock received (``fal_mock.requests``).

    ``route`` is e.g. ``"queue.submit"``, ``"queue.status"``, ``"queue.result"``,
    ``"queue.cancel"``, ``"run"``, ``"run.stream"``, ``"realtime.connect"`` (a WebSocket
    connection) or ``"realtime.message"`` (a message on one: method ``"WS"``, ``request_id``
    the connection's); ``None`` for a request that could not be routed. ``headers`` and
    ``query`` have credentials redacted. ``body`` is the raw body's first 64 KiB at most
    (``Settings.journal_body``; ``input`` stays whole).
    """

    method: str
    path: str
    route: Optional[str]
    model: Optional[str]
    request_id: Optional[str]
    input: Any
    query: Mapping[str, str]
    headers: Headers
    status_code: int
    body: bytes = field(default=b"", repr=False)

    def __str__(self) -> str:
        where = f"{self.method} {printable(self.path)}"
        bits = [f"route={self.route}" if self.route else "unrouted"]
        if self.model:
            bits.append(f"model={self.model!r}")
        if self.request_id:
            bits.append(f"request_id={self.request_id}")
        if self.input is not None:
            bits.append(f"input={summarize(self.input)}")
        return f"{where} ({', '.join(bits)}) -> {self.status_code}"


@dataclass(frozen=True)
class UnmatchedRequest:
    """A request no fixture served, with each fixture's reason for not matching."""

    method: str
    path: str
    route: str
    model: str
    input: Any
    reasons: Tuple[Tuple[str, str], ...]


def same_bytes(a: Blob, b: Blob) -> bool:
    """Whether two blobs hold the same bytes (compared by digest when they are not in memory)."""
    if a is b:
        return True
    if a.size != b.size:
        return False
    if a.in_memory and b.in_memory:
        return a.read() == b.read()
    digests = []
    for blob in (a, b):
        digest = hashlib.sha256()
        for piece in blob.chunks():
            digest.update(piece)
        digests.append(digest.digest())
    return digests[0] == digests[1]


class _Stored:
    """A file the mock holds; ``data`` reads its bytes (a large one lives in a temporary file)."""

    __slots__ = ("_blob", "content_type", "file_name", "url")

    def __init__(self, url: str, file_name: str, content_type: str, data: Union[bytes, Blob]) -> None:
        self.url = url
        self.file_name = file_name
        self.content_type = content_type
        self._blob = data if isinstance(data, Blob) else BytesBlob(bytes(data))

    @property
    def data(self) -> bytes:
        """The whole file (read into memory on each access: use :meth:`chunks` for big ones)."""
        return self._blob.read()

    @property
    def size(self) -> int:
        return self._blob.size

    def chunks(self, chunk: int = 1024 * 1024) -> Iterator[bytes]:
        """The file in pieces of at most ``chunk`` bytes."""
        return self._blob.chunks(chunk)

    #: The fields that make two records equal (and their repr), ``data`` aside.
    _names: tuple[str, ...] = ("url", "file_name", "content_type", "size")

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._names)

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_blob"):
            raise AttributeError(f"{type(self).__name__} is read-only")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Stored)
        return self._fields() == other._fields() and same_bytes(self._blob, other._blob)

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._names, self._fields()))
        return f"{type(self).__name__}({fields})"


class Upload(_Stored):
    """A file uploaded through the CDN, the storage flow or a multipart upload (``fal_mock.uploads``).

    ``via`` is ``"cdn"`` (``fal_client``'s default), ``"storage"`` (initiate + PUT) or
    ``"multipart"`` (either client's multipart flow, one record for the assembled file).
    """

    __slots__ = ("via",)
    _names = (*_Stored._names, "via")

    def __init__(
        self, url: str, file_name: str, content_type: str, data: Union[bytes, Blob], via: str = "cdn"
    ):
        self.via = via
        super().__init__(url, file_name, content_type, data)


class ServedFile(_Stored):
    """A file the mock serves (``fal_mock.files``); ``source`` says where it came from:
    ``"upload"``, ``"added"`` (``fal_mock.add_file``), ``"generated"`` (placeholder media, once
    downloaded) or ``"recorded"`` (media stored next to a fixture file)."""

    __slots__ = ("source",)
    _names = (*_Stored._names, "source")

    def __init__(self, url: str, file_name: str, content_type: str, data: Union[bytes, Blob], source: str):
        self.source = source
        super().__init__(url, file_name, content_type, data)


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook the mock delivered, or refused to deliver (``fal_mock.webhooks``).

    ``outcome`` is ``"delivered"`` (``status_code`` set), ``"failed"`` (``error`` set) or
    ``"blocked"`` (a non-loopback URL while remote webhooks are not allowed, or a submit another
    site's web page made; ``error`` says which). ``headers`` and
    ``data`` are what was sent (the signature headers, the exact body bytes they sign); empty
    when nothing was sent, and left out of ``==``.
    """

    url: str
    request_id: str
    body: Mapping[str, Any]
    outcome: str
    status_code: Optional[int] = None
    error: Optional[str] = None
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)
    data: bytes = field(default=b"", repr=False, compare=False)
