"""Routing: every accepted wire form of a request becomes one :class:`Operation`.

Routing knows HTTP and URL shapes and nothing else: no stubs, no jobs. Precedence:

1. the control API, ``/__falmock/<name>``;
2. a non-empty ``x-fal-target-url`` header (the real ``@fal-ai/client`` proxy convention);
3. a non-empty ``x-fal-target-host`` header on ``/fal/...`` (the aimock convention);
4. legacy paths ``/fal/queue/submit/{model}``, ``/fal/queue/requests/{id}[...]``, ``/fal/run/{model}``;
5. service-prefixed paths ``/fal/{queue|run|rest|cdn|files}/...``.

Every route is one of :data:`ROUTES`; the method rules (405 with ``Allow``, ``HEAD`` wherever
``GET`` is allowed) are applied here, once, for fal routes and control routes alike.

A run is a stream (``run.stream``) when its ``Accept`` names ``text/event-stream`` (any method,
like a run) or it posts to ``.../stream``; its model is the endpoint id without ``/stream``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union, cast, get_args
from urllib.parse import parse_qsl, urlsplit

from ._blob import Blob, BytesBlob
from ._constants import (
    CDN_HOSTS,
    QUEUE_HOSTS,
    REQUEST_TIMEOUT_HEADER,
    REST_HOSTS,
    RUN_HOSTS,
    TARGET_HOST_HEADER,
    TARGET_URL_HEADER,
)
from ._files import MAX_PARTS
from ._headers import Headers, accepts_event_stream
from ._http_wire import wants_websocket
from ._urls import CONTROL_PREFIX, GENERATED, MULTIPART, PREFIX, SERVICES, Service

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
EVENT_ROUTES: tuple[EventRoute, ...] = get_args(EventRoute)
#: Every ``route`` a journal record can carry.
JournalRoute = Union[Route, EventRoute]
#: The endpoint path ``fal_client.realtime()`` and ``fal.realtime.connect()`` add to the model.
REALTIME_PATH = "/realtime"
#: Control routes by name (``/__falmock/<name>``): the route of each method accepted.
CONTROL_ROUTES: dict[str, dict[str, Route]] = {
    "health": {"GET": "control.health"},
    "fixtures": {"POST": "control.fixtures", "DELETE": "control.fixtures_clear"},
    "reset": {"POST": "control.reset"},
    "requests": {"GET": "control.requests"},
    "unmatched": {"GET": "control.unmatched"},
    "advance": {"POST": "control.advance"},
}


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


def _detail(status: int, message: str, **kwargs: Any) -> RouteError:
    return RouteError(status, {"detail": message}, **kwargs)


def normalize_host(value: str) -> str:
    """``HTTPS://Queue.fal.run:443/x`` -> ``queue.fal.run``."""
    host = value.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host.startswith("["):  # IPv6 literal: keep as is, minus the port
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _service_for_host(host: str) -> Service:
    if host in QUEUE_HOSTS:
        return "queue"
    if host in RUN_HOSTS:
        return "run"
    if host in REST_HOSTS:
        return "rest"
    if host in CDN_HOSTS:
        return "cdn"
    raise _detail(
        400,
        f"Unknown fal host {host!r}: expected queue.fal.run, fal.run, rest.fal.ai or rest.alpha.fal.ai",
    )


def parse_query(raw: str) -> dict[str, str]:
    """A raw query string as a dict; the first value of a repeated key wins."""
    if not raw:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        out.setdefault(key, value)
    return out


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    base_url: str
    headers: Headers
    query: Mapping[str, str]
    body: Blob
    fal_host: Optional[str] = None

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

    def check_method(
        self, allowed: str, route: Route, model: Optional[str] = None, *, control: bool = False
    ) -> None:
        """405 with ``Allow`` unless the method is one of ``allowed`` (``HEAD`` counts as ``GET``)."""
        methods = allowed.split(", ")
        if self.method not in methods and not (self.method == "HEAD" and "GET" in methods):
            raise _detail(
                405,
                f"Method {self.method} is not allowed on {self.path} ({route}); use {allowed}",
                allow=f"{allowed}, OPTIONS",
                route=None if control else route,
                model=model,
                control=control,
            )


def is_control(path: str) -> bool:
    """True for every path of the control API family (``/__falmock/...``), known route or not."""
    return path.startswith(CONTROL_PREFIX)


def parse(
    method: str,
    path: str,
    query_string: str,
    headers: Headers,
    body: Blob,
    base_url: str,
) -> Operation:
    """Turn one HTTP request into an :class:`Operation`, or raise :class:`RouteError`."""
    method = method.upper()
    if is_control(path):
        return _control(path, _Request(method, path, base_url, headers, {}, body))
    target_url = headers.get(TARGET_URL_HEADER, "").strip()
    if target_url:
        try:
            parts = urlsplit(target_url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced "[" in the host
            hostname = None
        if not hostname:
            raise _detail(400, f"x-fal-target-url {target_url!r} is not an absolute URL")
        host = hostname.lower()
        req = _Request(method, path, base_url, headers, parse_query(parts.query), body, host)
        return _dispatch(_service_for_host(host), _segments(parts.path), req)

    under_prefix = path == PREFIX or path.startswith(PREFIX + "/")
    if not under_prefix:
        raise _detail(404, f"Not a fal_mock route: {path} (every route starts with {PREFIX}/)")
    fal_path = path[len(PREFIX) :]
    query = parse_query(query_string)

    target_host = headers.get(TARGET_HOST_HEADER, "").strip()
    if target_host:
        host = normalize_host(target_host)
        req = _Request(method, path, base_url, headers, query, body, host)
        return _dispatch(_service_for_host(host), _segments(fal_path), req)

    req = _Request(method, path, base_url, headers, query, body)
    segments = _segments(fal_path)
    if len(segments) >= 2 and segments[0] == "queue" and segments[1] == "submit":
        return _submit(segments[2:], req)
    if segments and segments[0] in SERVICES:
        return _dispatch(cast(Service, segments[0]), segments[1:], req)
    services = ", ".join(f"{PREFIX}/{service}/..." for service in SERVICES)
    raise _detail(
        404,
        f"No fal route at {path}: send an x-fal-target-url or x-fal-target-host header, or use {services}",
    )


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _control(path: str, req: _Request) -> Operation:
    name = path[len(CONTROL_PREFIX) :].strip("/")
    known = CONTROL_ROUTES.get(name)
    if known is None:
        routes = ", ".join(
            f"{method} {CONTROL_PREFIX}{n}" for n, methods in CONTROL_ROUTES.items() for method in methods
        )
        raise _detail(404, f"Unknown control route {CONTROL_PREFIX}{name}; routes: {routes}", control=True)
    req.check_method(", ".join(known), next(iter(known.values())), control=True)
    return req.op(known["GET" if req.method == "HEAD" else req.method])


def _dispatch(service: Service, segments: list[str], req: _Request) -> Operation:
    if service == "queue":
        return _queue(segments, req)
    if service == "run":
        return _run(segments, req)
    if service == "rest":
        return _rest(segments, req)
    if service == "cdn":
        return _cdn(segments, req)
    return _files(segments, req)


def parse_input(blob: Blob, route: Route, model: Optional[str]) -> Any:
    """An empty body is ``None``; anything else must be JSON."""
    body = blob.read()
    if not body.strip():
        return None
    try:
        return json.loads(body)
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


def _queue(segments: list[str], req: _Request) -> Operation:
    for i in range(len(segments) - 2, -1, -1):
        if segments[i] != "requests":
            continue
        tail = segments[i + 1 :]
        prefix = "/".join(segments[:i]) or None
        rid = tail[0]
        route: Optional[Route] = None
        method = "GET"
        if len(tail) == 1:
            route = "queue.result"
        elif tail[1:] == ["status"]:
            route = "queue.status"
        elif tail[1:] == ["status", "stream"]:
            route = "queue.status_stream"
        elif tail[1:] == ["cancel"]:
            route, method = "queue.cancel", "PUT"
        if route is not None:
            req.check_method(method, route, prefix)
            return req.op(route, model=prefix, request_id=rid)
    return _submit(segments, req)


def start_timeout(headers: Headers, route: Route, model: Optional[str]) -> Optional[float]:
    """``X-Fal-Request-Timeout`` in seconds (None when absent); anything but a positive number is a 400."""
    raw = headers.get(REQUEST_TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        message = f"X-Fal-Request-Timeout must be a positive number of seconds, got {raw[:40]!r}"
        raise _detail(400, message, route=route, model=model)
    return seconds


def _submit(segments: list[str], req: _Request) -> Operation:
    if not segments:
        raise _detail(404, f"No model id in {req.path}: submit to .../{{owner}}/{{model}}")
    model = "/".join(segments)
    req.check_method("POST", "queue.submit", model)
    return req.op(
        "queue.submit",
        model=model,
        input=parse_input(req.body, "queue.submit", model),
        start_timeout=start_timeout(req.headers, "queue.submit", model),
    )


def _run(segments: list[str], req: _Request) -> Operation:
    if not segments:
        raise _detail(404, f"No model id in {req.path}: run .../{{owner}}/{{model}}")
    if wants_websocket(req.headers):
        return _connect(segments, req)
    suffixed = len(segments) > 1 and segments[-1] == "stream"
    asks_for_stream, _ = accepts_event_stream(req.headers)
    route: Route = "run.stream" if suffixed or asks_for_stream else "run"
    model = "/".join(segments[:-1] if suffixed else segments)
    if suffixed and not asks_for_stream:
        req.check_method("POST", route, model)
    if req.method in ("GET", "HEAD") and not req.body:
        request_input = dict(req.query) or None
    else:
        request_input = parse_input(req.body, route, model)
    timeout = start_timeout(req.headers, route, model)
    return req.op(route, model=model, input=request_input, start_timeout=timeout)


#: Exact paths of the REST and CDN services (all POST): route, and whether the body is JSON input.
_EXACT: dict[tuple[Service, str], tuple[Route, bool]] = {
    ("rest", "storage/auth/token"): ("storage.token", False),
    ("rest", "storage/upload/initiate"): ("storage.initiate", True),
    ("rest", "storage/upload/initiate-multipart"): ("storage.initiate_multipart", True),
    ("cdn", "files/upload"): ("cdn.upload", False),
    ("cdn", "files/upload/multipart"): ("cdn.upload_multipart", False),
}


def _exact(service: Service, path: str, req: _Request) -> Optional[Operation]:
    known = _EXACT.get((service, path))
    if known is None:
        return None
    route, with_input = known
    req.check_method("POST", route)
    return req.op(route, input=parse_input(req.body, route, None)) if with_input else req.op(route)


def _connect(segments: list[str], req: _Request) -> Operation:
    """A WebSocket upgrade: ``{model}/realtime`` (``realtime()``) or any endpoint (``ws_connect()``)."""
    subpath = ""
    if len(segments) > 2 and f"/{segments[-1]}" == REALTIME_PATH:
        segments, subpath = segments[:-1], REALTIME_PATH
    model = "/".join(segments)
    req.check_method("GET", "realtime.connect", model)
    return req.op("realtime.connect", model=model, subpath=subpath)


def _rest(segments: list[str], req: _Request) -> Operation:
    path = "/".join(segments)
    op = _exact("rest", path, req)
    if op is not None:
        return op
    if path == "storage/upload/complete-multipart":
        raise _detail(
            501,
            "storage/upload/complete-multipart is not supported by fal_mock: complete a multipart "
            "upload with POST <upload_url>/complete, as @fal-ai/client does",
        )
    if path == "tokens":
        req.check_method("POST", "realtime.token")
        return req.op("realtime.token", input=parse_input(req.body, "realtime.token", None))
    if path == ".well-known/jwks.json":
        req.check_method("GET", "webhook.jwks")
        return req.op("webhook.jwks")
    raise _detail(404, f"Unknown fal REST route: /{path}")


def _cdn(segments: list[str], req: _Request) -> Operation:
    path = "/".join(segments)
    op = _exact("cdn", path, req)
    if op is None:
        raise _detail(404, f"Unknown fal CDN route: /{path}")
    return op


def _files(segments: list[str], req: _Request) -> Operation:
    if any(s in (".", "..") or "\\" in s or "\x00" in s for s in segments):
        raise _detail(404, f"No uploaded file at {req.path}")
    if len(segments) == 3 and segments[0] == GENERATED:
        req.check_method("GET", "files.generated")
        return req.op("files.generated", file_id=segments[1], file_name=segments[2])
    if len(segments) == 5 and segments[2] == MULTIPART:
        return _multipart(segments, req)
    if len(segments) != 2:
        raise _detail(404, f"No uploaded file at {req.path}")
    req.check_method("GET, PUT", "files.get")
    route: Route = "files.put" if req.method == "PUT" else "files.get"
    return req.op(route, file_id=segments[0], file_name=segments[1])


def _multipart(segments: list[str], req: _Request) -> Operation:
    """``<file id>/<name>/multipart/<upload id>/<part number>|complete``."""
    file_id, name, _, upload_id, tail = segments
    if tail == "complete":
        req.check_method("POST", "files.complete_multipart")
        parsed = parse_input(req.body, "files.complete_multipart", None)
        return req.op(
            "files.complete_multipart", file_id=file_id, file_name=name, upload_id=upload_id, input=parsed
        )
    if not (tail.isdigit() and tail.isascii()):
        raise _detail(
            404,
            f"No multipart route at {req.path}: PUT each part to .../{MULTIPART}/<uploadId>/<part number>, "
            f"then POST .../{MULTIPART}/<uploadId>/complete",
        )
    req.check_method("PUT", "files.upload_part")
    number = int(tail) if len(tail) < 10 else 0
    if not 1 <= number <= MAX_PARTS:
        raise _detail(400, f"Part number {tail} is out of range: parts are numbered 1 to {MAX_PARTS}")
    return req.op(
        "files.upload_part", file_id=file_id, file_name=name, upload_id=upload_id, part_number=number
    )
