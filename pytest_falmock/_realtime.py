"""Realtime and WebSocket apps: what the mock answers on a WebSocket connection.

The socket side (handshake, frames, closing) is :mod:`._websocket`; this module decides what
a connection gets, in fal's realtime protocol:

- the client sends each input as a binary msgpack message;
- the mock answers with binary msgpack results, or a text JSON error
  ``{"type": "x-fal-error", "error": E, "reason": R}`` (``RealtimeError`` in Python,
  ``onError`` in JS).

A connection (route ``realtime.connect``) is served by the WebSocket stubs of its endpoint -
``{model}/realtime`` for ``on_realtime``/``on_realtime_error``, ``{model}{path}`` for
``on_websocket`` - and the newest that fits decides how it speaks. On a realtime connection
every message (journaled as ``realtime.message``, with the decoded input) is matched again,
like an HTTP request (``times``, ``match_input``, a reply list used up on this connection); an
``on_websocket`` connection hands every frame to its handler. A connection or a message that
nothing serves gets an ``x-fal-error`` naming the model and is closed (1008), and the test
fails at teardown with each stub's reason.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, Callable, Final, Optional, Union

import msgpack

from ._constants import REQUEST_ID_HEADER
from ._headers import Headers
from ._journal import FalRequest, UnmatchedRequest
from ._operation import REALTIME_PATH, EventRoute, Operation
from ._reply import Message, Outgoing, Reply
from ._secrets import redact_query
from ._stores import Stores
from ._stubs import SocketAnswer, Stub, summarize

MESSAGE_ROUTE: Final[EventRoute] = "realtime.message"
#: The ``method`` of a message's journal record (it is not an HTTP request).
MESSAGE_METHOD: Final = "WS"
#: The ``error`` of the ``x-fal-error`` the mock itself sends.
NO_MATCH: Final = "no_fixture_match"
INVALID_MESSAGE: Final = "invalid_message"
HANDLER_ERROR: Final = "handler_error"
#: Close code for a connection or message nothing serves (RFC 6455: policy violation).
POLICY_VIOLATION: Final = 1008

#: Values one decoded message may hold (objects, arrays, strings, numbers): past it, the
#: message is refused, so no message makes the mock build millions of objects.
MAX_VALUES: Final = 1_000_000
#: A message this small is decoded as it is: it cannot hold many values, and each byte makes
#: at most about :data:`BYTE_COST` bytes of objects (an empty array is one byte).
SMALL_MESSAGE: Final = 1024
BYTE_COST: Final = 80

#: Records a journal entry, the unmatched record of one and the decoded input's estimated
#: size: the engine's ``_journal``.
Journal = Callable[[FalRequest, Optional[UnmatchedRequest], int], None]
#: A realtime reply as stored: packed msgpack, a list of packed results, or a callable.
RealtimeReply = Union[bytes, "list[bytes]", Callable[[Any], Any]]


def x_fal_error(error: str, reason: str) -> str:
    """fal's error message: a text frame that clients raise (Python) or report (JS)."""
    return json.dumps({"type": "x-fal-error", "error": error, "reason": reason})


def pack(value: Any, where: str) -> bytes:
    """``value`` as one msgpack result; a ``TypeError`` naming ``where`` if it cannot be."""
    if not isinstance(value, dict):
        raise TypeError(f"{where}: a realtime result must be a dict, got {summarize(value, 80)}")
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{where}: the result cannot be sent as msgpack: {exc}") from None
    return data


def realtime_reply(reply: Any, where: str) -> RealtimeReply:
    """Validate ``on_realtime``'s ``reply`` (a dict, a non-empty list of dicts, a callable),
    packing dicts now: what is sent is what was registered, checked once."""
    if isinstance(reply, dict):
        return pack(reply, where)
    if isinstance(reply, (list, tuple)):
        if not reply:
            raise ValueError(f"{where}: the reply list is empty (give one dict per message)")
        return [pack(item, f"{where} reply[{i}]") for i, item in enumerate(reply)]
    if callable(reply):
        return reply  # type: ignore[no-any-return]
    raise TypeError(
        f"{where}: reply must be a dict, a list of dicts or a callable (message) -> dict | list | None, "
        f"got {summarize(reply, 80)}"
    )


def realtime_answer(reply: Any, where: str) -> SocketAnswer:
    return SocketAnswer("realtime", REALTIME_PATH, realtime_reply(reply, where))


def realtime_error(error: Any, reason: Any, where: str) -> SocketAnswer:
    if not isinstance(error, str) or not error:
        raise TypeError(f"{where}: error must be a non-empty string, got {error!r}")
    if not isinstance(reason, str):
        raise TypeError(f"{where}: reason must be a string, got {reason!r}")
    return SocketAnswer("realtime", REALTIME_PATH, error=(error, reason))


def websocket_answer(handler: Any, path: Any, where: str) -> SocketAnswer:
    if not callable(handler):
        raise TypeError(
            f"{where}: handler must be a callable (frame: str | bytes) -> frames, got {handler!r}"
        )
    if not isinstance(path, str):
        raise TypeError(f"{where}: path must be a string, got {path!r}")
    return SocketAnswer("websocket", "/" + path.lstrip("/") if path else "", handler)


def connect(
    stores: Stores, op: Operation, connection_id: str, journal: Journal
) -> tuple[Reply, Optional[UnmatchedRequest]]:
    """Accept a WebSocket connection (and the unmatched record of one that nothing serves: it
    is told so once it is open); ``journal`` records each of its messages."""
    assert op.model is not None
    endpoint = op.model + op.subpath
    stub, reasons = stores.claim("connection", endpoint, None, use=False)
    model = op.model if stub is None else stub.model_of(endpoint)
    session = Session(stores, op, connection_id, model, stub, journal)
    reply = Reply(101, headers={REQUEST_ID_HEADER: connection_id}, websocket=session, model=model)
    if stub is not None:
        return reply, None
    unmatched = UnmatchedRequest(op.method, op.path, op.route, model, None, tuple(reasons))
    stores.record_unmatched(unmatched)
    session.refusal = f"fal_mock: no fixture matches model {model!r} (WebSocket connection to /{endpoint})"
    return reply, unmatched


def _frames(result: Any) -> tuple[Message, ...]:
    """An ``on_websocket`` handler's answer as frames (``str | bytes | list | None``)."""
    items = [] if result is None else result if isinstance(result, (list, tuple)) else [result]
    frames: list[Message] = []
    for item in items:
        if isinstance(item, (bytearray, memoryview)):
            item = bytes(item)
        if not isinstance(item, (str, bytes)):
            raise TypeError(f"answered {summarize(item, 80)}; expected str, bytes, a list of them, or None")
        frames.append(item)
    return tuple(frames)


class Session:
    """One WebSocket connection's application side (a :class:`~._reply.WebSocketApp`)."""

    def __init__(
        self,
        stores: Stores,
        op: Operation,
        connection_id: str,
        model: str,
        stub: Optional[Stub],
        journal: Journal,
    ) -> None:
        assert op.model is not None
        self.stores = stores
        self.journal = journal
        self.endpoint = op.model + op.subpath
        self.model = model
        self.path = op.path
        self.query = redact_query(op.query)
        self.connection_id = connection_id
        #: The stub that accepted the connection (it alone serves an ``on_websocket`` one).
        self.stub = stub
        self.protocol = stub.socket.protocol if stub is not None and stub.socket is not None else "realtime"
        #: Set when nothing serves the connection: the reason it is closed once open.
        self.refusal: Optional[str] = None
        self.generation = stores.request_generation()
        #: Messages each list reply answered on this connection.
        self.served: dict[Stub, int] = {}

    # -- WebSocketApp ---------------------------------------------------------------------------
    def opened(self) -> Outgoing:
        if self.refusal is None:
            return Outgoing()
        return Outgoing(
            (x_fal_error(NO_MATCH, self.refusal),), (POLICY_VIOLATION, "fal_mock: no fixture matched")
        )

    def received(self, message: Message) -> Outgoing:
        if not self.stores.is_current(self.generation):
            return Outgoing()  # the test that opened it is over; the reset is closing it
        if self.protocol == "websocket":
            return self._frame(message)
        return self._realtime(message)

    # -- realtime ---------------------------------------------------------------------------------
    def _realtime(self, message: Message) -> Outgoing:
        try:
            value, cost = decode(message)
        except ValueError as exc:
            self._journal(None, message, 400)
            return Outgoing((x_fal_error(INVALID_MESSAGE, f"fal_mock: {exc}"),))
        stub, reasons = self.stores.claim("realtime", self.endpoint, value, check=self._list_left)
        if stub is None:
            unmatched = UnmatchedRequest(
                MESSAGE_METHOD, self.path, MESSAGE_ROUTE, self.model, value, tuple(reasons)
            )
            self.stores.record_unmatched(unmatched, cost)
            self._journal(value, message, 404, unmatched, cost)
            reason = (
                f"fal_mock: no fixture matches model {self.model!r} (realtime message {summarize(value, 60)})"
            )
            return Outgoing(
                (x_fal_error(NO_MATCH, reason),), (POLICY_VIOLATION, "fal_mock: no fixture matched")
            )
        answer = stub.socket
        assert answer is not None
        if answer.error is not None:
            self._journal(value, message, 400, None, cost)
            return Outgoing((x_fal_error(*answer.error),))
        try:
            frames = self._results(stub, answer.reply, value)
        except Exception as exc:  # the test's callable: reported at teardown, not a server crash
            return self._failed(stub, exc, value, message, cost)
        self._journal(value, message, 200, None, cost)
        return Outgoing(frames)

    def _list_left(self, stub: Stub) -> Optional[str]:
        answer = stub.socket
        if answer is None or not isinstance(answer.reply, list):
            return None
        served = self.served.get(stub, 0)
        if served < len(answer.reply):
            return None
        return f"reply list used up on this connection (answered {served} of {len(answer.reply)} messages)"

    def _results(self, stub: Stub, reply: RealtimeReply, value: Any) -> tuple[bytes, ...]:
        if isinstance(reply, bytes):
            return (reply,)
        if isinstance(reply, list):
            served = self.served.get(stub, 0)
            self.served[stub] = served + 1
            return (reply[served],)
        result = reply(value)
        if result is None:
            return ()
        where = "the reply callable"
        if isinstance(result, (list, tuple)):
            return tuple(pack(item, where) for item in result)
        return (pack(result, where),)

    # -- raw frames (on_websocket) --------------------------------------------------------------
    def _frame(self, message: Message) -> Outgoing:
        assert self.stub is not None
        assert self.stub.socket is not None
        try:
            frames = _frames(self.stub.socket.reply(message))
        except Exception as exc:  # the test's handler: reported at teardown
            return self._failed(self.stub, exc, message, message, len(message))
        self._journal(message, message, 200, None, len(message))
        return Outgoing(frames)

    # -- shared ---------------------------------------------------------------------------------
    def _failed(self, stub: Stub, exc: Exception, value: Any, message: Message, cost: int) -> Outgoing:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.stores.add_handler_error(f"{stub.label}, for the message {summarize(value)}:\n{trace}")
        self._journal(value, message, 500, None, cost)
        reason = f"fal_mock: {stub.label} failed: {exc!r}"
        return Outgoing((x_fal_error(HANDLER_ERROR, reason),))

    def _journal(
        self,
        value: Any,
        message: Message,
        status: int,
        unmatched: Optional[UnmatchedRequest] = None,
        cost: int = 0,
    ) -> None:
        self.journal(
            FalRequest(
                method=MESSAGE_METHOD,
                path=self.path,
                route=MESSAGE_ROUTE,
                model=self.model,
                request_id=self.connection_id,
                input=value,
                query=self.query,
                headers=Headers(),
                status_code=status,
                body=message.encode() if isinstance(message, str) else message,
            ),
            unmatched,
            cost,
        )


class _TooMany(ValueError):
    def __init__(self) -> None:
        super().__init__(f"the message holds more than {MAX_VALUES:,} values (objects, arrays, items)")


def decode(message: Message) -> tuple[Any, int]:
    """A realtime input - msgpack (binary), else JSON text, else the text itself - and about
    the memory it takes decoded; ``ValueError`` for a message that is not valid msgpack or holds
    more than :data:`MAX_VALUES` values (counted while msgpack decodes arrays and maps, so an
    array of a million empty arrays is refused before it is built whole)."""
    if isinstance(message, str):
        try:
            value = json.loads(message)
        except (ValueError, RecursionError):
            return message, len(message)
        return value, value_cost(value)
    if len(message) <= SMALL_MESSAGE and len(message) < MAX_VALUES:  # the usual case, kept fast
        try:
            return msgpack.unpackb(message, raw=False), BYTE_COST * len(message)
        except Exception as exc:
            raise ValueError(f"the message is not valid msgpack: {str(exc) or type(exc).__name__}") from None
    built = 0

    def counted(container: Any) -> Any:
        nonlocal built
        built += 1
        if built > MAX_VALUES:
            raise _TooMany
        return container

    try:
        value = msgpack.unpackb(message, raw=False, list_hook=counted, object_hook=counted)
    except _TooMany:
        raise
    except Exception as exc:
        raise ValueError(f"the message is not valid msgpack: {str(exc) or type(exc).__name__}") from None
    return value, value_cost(value)


def value_cost(value: Any) -> int:
    """About the memory a decoded value takes (objects and their bytes; an upper estimate);
    ``ValueError`` when it holds more than :data:`MAX_VALUES` values."""
    cost, seen, stack = 0, 0, [value]
    while stack:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            cost += 64 + 48 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            cost += 56 + 8 * len(item)
            stack.extend(item)
        elif isinstance(item, (str, bytes, bytearray)):
            cost += 56 + len(item)
        else:
            cost += 32
        if seen + len(stack) > MAX_VALUES:
            raise _TooMany
    return cost
