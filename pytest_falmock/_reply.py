"""What the engine answers: a value the server turns into an HTTP response."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ._blob import Blob

JSON = "application/json"


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Raw bytes instead of a JSON body (served files, streamed when they are not in memory).
    raw: Optional[Blob] = None
    content_type: str = JSON
    #: Server-sent events: each item is JSON-encoded into one ``data:`` event.
    events: Optional[Iterator[Any]] = None


def detail(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"detail": message}, dict(headers))
