"""What the engine answers: a value the server turns into an HTTP response (or a WebSocket)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol, Tuple, Union

from ._blob import Blob

JSON = "application/json"

#: One WebSocket message: text (``str``) or binary (``bytes``).
Message = Union[str, bytes]


@dataclass(frozen=True)
class Outgoing:
    """What a WebSocket app sends: ``messages`` in order, then a close frame if ``close`` is set."""

    messages: Tuple[Message, ...] = ()
    #: ``(close code, reason)``; the connection closes after the messages.
    close: Optional[Tuple[int, str]] = None


class WebSocketApp(Protocol):
    """The application side of one WebSocket connection (:mod:`._realtime`); the socket side,
    :mod:`._websocket`, calls it from the connection's thread, one message at a time."""

    def opened(self) -> Outgoing:
        """The handshake is done: what to send first."""

    def received(self, message: Message) -> Outgoing:
        """One complete message from the client: what to answer."""


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
    #: With status 101: the connection becomes a WebSocket served by this app.
    websocket: Optional[WebSocketApp] = None
    #: The model to journal when the handler knows it better than routing (a WebSocket
    #: endpoint ``{model}{path}``); None keeps the operation's.
    model: Optional[str] = None


def detail(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"detail": message}, dict(headers))
