"""What routing produces: the closed set of routes, the :class:`Operation` and the errors.

The vocabulary shared by :mod:`._routing` (which wire form a request takes) and
:mod:`._fal_routes` (the path grammar of each fal service), and read by everything that acts on
a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union, get_args
from urllib.parse import parse_qsl

from ._blob import Blob, BytesBlob
from ._headers import Headers
from ._settings import DEFAULT_MAX_INPUT

#: Every route a request can be routed to: the journal's ``route`` values (but the journal-only
#: :data:`EventRoute`), plus the control API.
Route = Literal[
    "queue.submit",
    "queue.status",
    "queue.status_stream",
    "queue.result",
    "queue.cancel",
    "run",
    "run.stream",
    "storage.token",
    "storage.initiate",
    "storage.initiate_multipart",
    "realtime.token",
    "webhook.jwks",
    "realtime.connect",
    "cdn.upload",
    "cdn.upload_multipart",
    "files.put",
    "files.get",
    "files.generated",
    "files.upload_part",
    "files.complete_multipart",
    "control.health",
    "control.fixtures",
    "control.fixtures_clear",
    "control.reset",
    "control.requests",
    "control.unmatched",
    "control.advance",
]
ROUTES: tuple[Route, ...] = get_args(Route)
#: Journal-only routes: records of what is not an HTTP request (a message received on a
#: WebSocket connection). Routing never produces them, so they need no handler.
EventRoute = Literal["realtime.message"]
#: Every ``route`` a journal record can carry.
JournalRoute = Union[Route, EventRoute]
#: The endpoint path ``fal_client.realtime()`` and ``fal.realtime.connect()`` add to the model.
REALTIME_PATH = "/realtime"


@dataclass(frozen=True)
class Operation:
    """One parsed request, whatever wire form it arrived in.

    File routes name the file by ``file_id`` and ``file_name`` (for ``files.generated``,
    ``file_id`` is the media spec, e.g. ``1024x768``); multipart routes add ``upload_id`` and,
    for a part, ``part_number``.
    """

    route: Route
    method: str
    path: str
    base_url: str
    headers: Headers
    query: Mapping[str, str]
    body: Blob = field(default_factory=BytesBlob)
    model: Optional[str] = None
    request_id: Optional[str] = None
    input: Any = None
    file_id: Optional[str] = None
    file_name: Optional[str] = None
    upload_id: Optional[str] = None
    part_number: Optional[int] = None
    #: The fal host a routing header named (``queue.fal.run``, ...); None for path-routed requests.
    fal_host: Optional[str] = None
    #: ``X-Fal-Request-Timeout`` of a submit or run (``start_timeout``), in seconds.
    start_timeout: Optional[float] = None
    #: ``realtime.connect``: the endpoint path after ``model`` (:data:`REALTIME_PATH` or "").
    subpath: str = ""
    #: About the memory ``input`` takes, decoded (:func:`json_cost`): what the journal counts.
    input_cost: int = 0


class RouteError(Exception):
    """The request cannot be routed; carries the HTTP answer."""

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        allow: Optional[str] = None,
        route: Optional[Route] = None,
        model: Optional[str] = None,
        control: bool = False,
    ) -> None:
        super().__init__(f"{status} {body!r}")
        self.status = status
        self.body = body
        self.allow = allow
        self.route = route
        self.model = model
        #: A control-API request: answered, never journaled.
        self.control = control


def detail_error(status: int, message: str, **kwargs: Any) -> RouteError:
    return RouteError(status, {"detail": message}, **kwargs)


def parse_query(raw: str) -> dict[str, str]:
    """A raw query string as a dict; the first value of a repeated key wins."""
    if not raw:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        out.setdefault(key, value)
    return out


@dataclass(frozen=True)
class RouteRequest:
    """A request on its way through routing: what every route's :class:`Operation` shares."""

    method: str
    path: str
    base_url: str
    headers: Headers
    query: Mapping[str, str]
    body: Blob
    fal_host: Optional[str] = None
    #: The largest body decoded as a JSON input (``Settings.max_input``; 413 beyond).
    max_input: int = DEFAULT_MAX_INPUT

    def op(self, route: Route, **kwargs: Any) -> Operation:
        return Operation(
            route=route,
            method=self.method,
            path=self.path,
            base_url=self.base_url,
            headers=self.headers,
            query=self.query,
            body=self.body,
            fal_host=self.fal_host,
            **kwargs,
        )

    def op_with_input(self, route: Route, model: Optional[str] = None, **kwargs: Any) -> Operation:
        """``op(route, ...)`` with the body decoded as its JSON ``input`` (:func:`parse_input`)."""
        value, cost = parse_input(self.body, route, model, self.max_input)
        return self.op(route, model=model, input=value, input_cost=cost, **kwargs)

    def check_method(
        self, allowed: str, route: Route, model: Optional[str] = None, *, control: bool = False
    ) -> None:
        """405 with ``Allow`` unless the method is one of ``allowed`` (``HEAD`` counts as ``GET``)."""
        methods = allowed.split(", ")
        if self.method not in methods and not (self.method == "HEAD" and "GET" in methods):
            raise detail_error(
                405,
                f"Method {self.method} is not allowed on {self.path} ({route}); use {allowed}",
                allow=f"{allowed}, OPTIONS",
                route=None if control else route,
                model=model,
                control=control,
            )


def json_cost(raw: bytes) -> int:
    """About the memory the value decoded from JSON ``raw`` takes, from a few byte counts (no
    second parse): its bytes, plus each object, array, value and string. It errs on the high
    side, so a budget of such costs bounds memory even for inputs made to blow up when decoded
    (``[{},{},...]`` takes about 25 times its bytes)."""
    objects = raw.count(b"{") + raw.count(b"[")
    return len(raw) + 64 * objects + 32 * raw.count(b",") + 24 * raw.count(b'"')


def parse_input(
    blob: Blob, route: Route, model: Optional[str], max_input: int = DEFAULT_MAX_INPUT
) -> tuple[Any, int]:
    """The JSON input of a body (an empty one is ``None``) and its :func:`json_cost`.

    A body over ``max_input`` is refused (413) before it is decoded.
    """
    if blob.size > max_input:
        raise RouteError(
            413,
            {
                "detail": f"JSON input of {blob.size} bytes exceeds the {max_input}-byte limit "
                "(Settings.max_input): send large data as a file (upload it, pass its URL)"
            },
            route=route,
            model=model,
        )
    body = blob.read()
    if not body.strip():
        return None, 0
    try:
        return json.loads(body), json_cost(body)
    except (ValueError, RecursionError) as exc:
        raise RouteError(
            400,
            {
                "error": {
                    "code": "invalid_json",
                    "type": "invalid_request_error",
                    "message": f"Malformed JSON in request body: {exc}",
                }
            },
            route=route,
            model=model,
        ) from None
