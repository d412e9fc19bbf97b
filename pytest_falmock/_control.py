"""The control API under ``/__falmock/``: drive a running mock from any language.

| Method | Path | Answer |
|---|---|---|
| GET | ``/__falmock/health`` | 200 ``{"status": "ok"}`` |
| POST | ``/__falmock/fixtures`` | 201 ``{"added": n}``: session stubs from a fixture-file body |
| DELETE | ``/__falmock/fixtures`` | 200 ``{"removed": n}``: every session stub forgotten (no body) |
| POST | ``/__falmock/reset`` | 200 ``{"reset": true}``: jobs, journal and per-test state cleared |
| GET | ``/__falmock/requests`` | 200, the journal as a JSON list |
| GET | ``/__falmock/unmatched`` | 200, the requests no stub served, each with every stub's reason |
| POST | ``/__falmock/advance`` | 200 ``{"advanced": n, "offset": total}``: body ``{"seconds": n}`` |

Routing turns these paths into ``control.*`` operations (method rules included); this module
answers them through the small :class:`Controlled` protocol that
:class:`~pytest_falmock.FalMock` implements, so it is on wherever a mock runs.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Protocol, Sequence, Union

from ._clock import Clock
from ._fixture_files import FixtureFileError
from ._journal import FalRequest, UnmatchedRequest
from ._operation import Operation, Route
from ._reply import Reply


class Controlled(Protocol):
    """What the control API needs of a mock."""

    @property
    def requests(self) -> Sequence[FalRequest]: ...

    @property
    def unmatched(self) -> Sequence[UnmatchedRequest]: ...

    def reset(self) -> None: ...

    def add_fixture_document(self, document: Any, source: str = ...) -> int: ...

    def clear_session_stubs(self) -> int: ...

    def advance(self, seconds: float) -> None: ...

    @property
    def clock(self) -> Clock: ...


def _request_fields(request: Union[FalRequest, UnmatchedRequest]) -> dict[str, Any]:
    names = ("method", "path", "route", "model")
    return {**{name: getattr(request, name) for name in names}, "input": jsonable(request.input)}


def jsonable(value: Any) -> Any:
    """A decoded input as JSON: binary (a realtime message's bytes, a raw WebSocket frame) as a
    base64 ``data:`` URI, any other non-JSON value as its ``repr``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "data:application/octet-stream;base64," + base64.b64encode(value).decode()
    return repr(value)


def request_record(request: FalRequest) -> dict[str, Any]:
    """A journal record as JSON (credentials already redacted; the raw body left out)."""
    return {
        **_request_fields(request),
        "request_id": request.request_id,
        "query": dict(request.query),
        "headers": dict(request.headers.items()),
        "status_code": request.status_code,
    }


def unmatched_record(request: UnmatchedRequest) -> dict[str, Any]:
    """An unmatched request as JSON, with each stub's reason for not serving it."""
    reasons = [{"fixture": label, "reason": reason} for label, reason in request.reasons]
    return {**_request_fields(request), "reasons": reasons}


class Control:
    """Answers the ``control.*`` routes for one mock."""

    def __init__(self, mock: Controlled) -> None:
        self._mock = mock

    @property
    def handlers(self) -> dict[Route, Callable[[Operation], Reply]]:
        return {
            "control.health": self._health,
            "control.fixtures": self._fixtures,
            "control.fixtures_clear": self._fixtures_clear,
            "control.reset": self._reset,
            "control.requests": self._requests,
            "control.unmatched": self._unmatched,
            "control.advance": self._advance,
        }

    def _health(self, op: Operation) -> Reply:
        return Reply(200, {"status": "ok"})

    @staticmethod
    def _json_body(op: Operation, source: str) -> Any:
        """The body as JSON (None when empty); a :class:`Reply` 400 when it is not JSON."""
        try:
            raw = op.body.read()
            return json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError) as exc:
            return Reply(400, {"detail": f"{source}: the body is not valid JSON: {exc}"})

    def _fixtures(self, op: Operation) -> Reply:
        source = "POST /__falmock/fixtures"
        document = self._json_body(op, source)
        if isinstance(document, Reply):
            return document
        try:
            added = self._mock.add_fixture_document(document, source)
        except FixtureFileError as exc:
            return Reply(400, {"detail": str(exc)})
        return Reply(201, {"added": added})

    def _fixtures_clear(self, op: Operation) -> Reply:
        return Reply(200, {"removed": self._mock.clear_session_stubs()})

    def _reset(self, op: Operation) -> Reply:
        self._mock.reset()
        return Reply(200, {"reset": True})

    def _requests(self, op: Operation) -> Reply:
        return Reply(200, [request_record(r) for r in self._mock.requests])

    def _unmatched(self, op: Operation) -> Reply:
        return Reply(200, [unmatched_record(r) for r in self._mock.unmatched])

    def _advance(self, op: Operation) -> Reply:
        source = "POST /__falmock/advance"
        body = self._json_body(op, source)
        if isinstance(body, Reply):
            return body
        if not isinstance(body, dict) or set(body) != {"seconds"}:
            return Reply(400, {"detail": f'{source}: expected a JSON body {{"seconds": N}}, got {body!r}'})
        try:
            self._mock.advance(body["seconds"])
        except (TypeError, ValueError) as exc:
            return Reply(400, {"detail": f"{source}: {exc}"})
        return Reply(200, {"advanced": float(body["seconds"]), "offset": self._mock.clock.offset})
