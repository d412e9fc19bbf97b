"""Immutable records handed to users: journal entries, uploads, unmatched requests, webhooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from ._headers import Headers
from ._stubs import summarize


@dataclass(frozen=True)
class FalRequest:
    """One request the mock received (``fal_mock.requests``).

    ``route`` is e.g. ``"queue.submit"``, ``"queue.status"``, ``"queue.result"``,
    ``"queue.cancel"``, ``"run"``, ``"run.stream"``; ``None`` for a request that could not
    be routed. ``headers`` has credentials redacted.
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
        where = f"{self.method} {self.path}"
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


@dataclass(frozen=True)
class Upload:
    """A file uploaded through the CDN or the storage flow (``fal_mock.uploads``)."""

    url: str
    file_name: str
    content_type: str
    data: bytes = field(repr=False)
    via: str = "cdn"

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook the mock delivered, or refused to deliver (``fal_mock.webhooks``).

    ``outcome`` is ``"delivered"`` (``status_code`` set), ``"failed"`` (``error`` set) or
    ``"blocked"`` (a non-loopback URL while remote webhooks are not allowed). ``headers`` and
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
