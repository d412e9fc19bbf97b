"""The control API under ``/__falmock/``: drive a running mock from any language.

| Method | Path | Answer |
|---|---|---|
| GET | ``/__falmock/health`` | 200 ``{"status": "ok"}`` |
| POST | ``/__falmock/fixtures`` | 201 ``{"added": n}``: session fixtures from a body in the file format |
| POST | ``/__falmock/reset`` | 200 ``{"reset": true}``: jobs, journal and per-test state cleared |
| GET | ``/__falmock/requests`` | 200, the journal as a JSON list |

Plugged into the server's ``control`` hook by :class:`~pytest_falmock.FalMock`, so it is on
wherever a mock runs (``fal-mock``, ``with FalMock()``, the pytest fixture).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from ._fixture_files import FixtureFileError
from ._records import FalRequest
from ._reply import Reply

if TYPE_CHECKING:
    from ._mock import FalMock

ROUTES = {"health": "GET", "fixtures": "POST", "reset": "POST", "requests": "GET"}


def request_record(request: FalRequest) -> dict[str, Any]:
    """A journal record as JSON (credentials already redacted; the raw body left out)."""
    return {
        "method": request.method,
        "path": request.path,
        "route": request.route,
        "model": request.model,
        "request_id": request.request_id,
        "input": request.input,
        "query": dict(request.query),
        "headers": dict(request.headers.items()),
        "status_code": request.status_code,
    }


class Control:
    """Answers ``/__falmock/<name>``; ``reset_hooks`` run after every reset (e.g. CLI defaults)."""

    def __init__(self, mock: FalMock) -> None:
        self._mock = mock
        self.reset_hooks: list[Callable[[], None]] = []

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        name = path.strip("/")
        allowed = ROUTES.get(name)
        if allowed is None:
            routes = ", ".join(f"{m} /__falmock/{n}" for n, m in ROUTES.items())
            return Reply(404, {"detail": f"Unknown control route /__falmock/{name}; routes: {routes}"})
        if method.upper() != allowed and not (method.upper() == "HEAD" and allowed == "GET"):
            return Reply(
                405,
                {"detail": f"Method {method} is not allowed on /__falmock/{name}; use {allowed}"},
                {"Allow": f"{allowed}, OPTIONS"},
            )
        handler: Callable[[bytes], Reply] = getattr(self, f"_{name}")
        return handler(body)

    def _health(self, body: bytes) -> Reply:
        return Reply(200, {"status": "ok"})

    def _fixtures(self, body: bytes) -> Reply:
        source = "POST /__falmock/fixtures"
        try:
            document = json.loads(body) if body.strip() else None
        except (ValueError, RecursionError) as exc:
            return Reply(400, {"detail": f"{source}: the body is not valid JSON: {exc}"})
        try:
            added = self._mock.add_fixture_document(document, source)
        except FixtureFileError as exc:
            return Reply(400, {"detail": str(exc)})
        return Reply(201, {"added": added})

    def _reset(self, body: bytes) -> Reply:
        self._mock.reset()
        for hook in self.reset_hooks:
            hook()
        return Reply(200, {"reset": True})

    def _requests(self, body: bytes) -> Reply:
        return Reply(200, [request_record(r) for r in self._mock.requests])
