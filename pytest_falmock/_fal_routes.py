"""The path grammar of each fal service (queue, run, rest, cdn, files) after routing picked it.

:func:`dispatch` turns the path segments of a request routed to a service into its
:class:`~._operation.Operation` (method rules included), or raises a
:class:`~._operation.RouteError`.

A run is a stream (``run.stream``) when its ``Accept`` names ``text/event-stream`` (any method,
like a run) or it posts to ``.../stream``; its model is the endpoint id without ``/stream``.
"""

from __future__ import annotations

import math
from typing import Optional

from ._constants import REQUEST_TIMEOUT_HEADER
from ._files import MAX_PARTS
from ._headers import Headers, accepts_event_stream
from ._http_wire import wants_websocket
from ._operation import REALTIME_PATH, Operation, Route, RouteRequest, detail_error
from ._urls import GENERATED, MULTIPART, Service


def dispatch(service: Service, segments: list[str], req: RouteRequest) -> Operation:
    if service == "queue":
        return _queue(segments, req)
    if service == "run":
        return _run(segments, req)
    if service == "rest":
        return _rest(segments, req)
    if service == "cdn":
        return _cdn(segments, req)
    return _files(segments, req)


def _queue(segments: list[str], req: RouteRequest) -> Operation:
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
    return submit(segments, req)


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
        raise detail_error(400, message, route=route, model=model)
    return seconds


def submit(segments: list[str], req: RouteRequest) -> Operation:
    if not segments:
        raise detail_error(404, f"No model id in {req.path}: submit to .../{{owner}}/{{model}}")
    model = "/".join(segments)
    req.check_method("POST", "queue.submit", model)
    return req.op_with_input(
        "queue.submit", model, start_timeout=start_timeout(req.headers, "queue.submit", model)
    )


def _run(segments: list[str], req: RouteRequest) -> Operation:
    if not segments:
        raise detail_error(404, f"No model id in {req.path}: run .../{{owner}}/{{model}}")
    if wants_websocket(req.headers):
        return _connect(segments, req)
    suffixed = len(segments) > 1 and segments[-1] == "stream"
    asks_for_stream, _ = accepts_event_stream(req.headers)
    route: Route = "run.stream" if suffixed or asks_for_stream else "run"
    model = "/".join(segments[:-1] if suffixed else segments)
    if suffixed and not asks_for_stream:
        req.check_method("POST", route, model)
    timeout = start_timeout(req.headers, route, model)
    if req.method in ("GET", "HEAD") and not req.body:
        return req.op(route, model=model, input=dict(req.query) or None, start_timeout=timeout)
    return req.op_with_input(route, model, start_timeout=timeout)


#: Exact paths of the REST and CDN services (all POST): route, and whether the body is JSON input.
_EXACT: dict[tuple[Service, str], tuple[Route, bool]] = {
    ("rest", "storage/auth/token"): ("storage.token", False),
    ("rest", "storage/upload/initiate"): ("storage.initiate", True),
    ("rest", "storage/upload/initiate-multipart"): ("storage.initiate_multipart", True),
    ("cdn", "files/upload"): ("cdn.upload", False),
    ("cdn", "files/upload/multipart"): ("cdn.upload_multipart", False),
}


def _exact(service: Service, path: str, req: RouteRequest) -> Optional[Operation]:
    known = _EXACT.get((service, path))
    if known is None:
        return None
    route, with_input = known
    req.check_method("POST", route)
    return req.op_with_input(route) if with_input else req.op(route)


def _connect(segments: list[str], req: RouteRequest) -> Operation:
    """A WebSocket upgrade: ``{model}/realtime`` (``realtime()``) or any endpoint (``ws_connect()``)."""
    subpath = ""
    if len(segments) > 2 and f"/{segments[-1]}" == REALTIME_PATH:
        segments, subpath = segments[:-1], REALTIME_PATH
    model = "/".join(segments)
    req.check_method("GET", "realtime.connect", model)
    return req.op("realtime.connect", model=model, subpath=subpath)


def _rest(segments: list[str], req: RouteRequest) -> Operation:
    path = "/".join(segments)
    op = _exact("rest", path, req)
    if op is not None:
        return op
    if path == "storage/upload/complete-multipart":
        raise detail_error(
            501,
            "storage/upload/complete-multipart is not supported by fal_mock: complete a multipart "
            "upload with POST <upload_url>/complete, as @fal-ai/client does",
        )
    if path == "tokens":
        req.check_method("POST", "realtime.token")
        return req.op_with_input("realtime.token")
    if path == ".well-known/jwks.json":
        req.check_method("GET", "webhook.jwks")
        return req.op("webhook.jwks")
    raise detail_error(404, f"Unknown fal REST route: /{path}")


def _cdn(segments: list[str], req: RouteRequest) -> Operation:
    path = "/".join(segments)
    op = _exact("cdn", path, req)
    if op is None:
        raise detail_error(404, f"Unknown fal CDN route: /{path}")
    return op


def _files(segments: list[str], req: RouteRequest) -> Operation:
    if any(s in (".", "..") or "\\" in s or "\x00" in s for s in segments):
        raise detail_error(404, f"No uploaded file at {req.path}")
    if len(segments) == 3 and segments[0] == GENERATED:
        req.check_method("GET", "files.generated")
        return req.op("files.generated", file_id=segments[1], file_name=segments[2])
    if len(segments) == 5 and segments[2] == MULTIPART:
        return _multipart(segments, req)
    if len(segments) != 2:
        raise detail_error(404, f"No uploaded file at {req.path}")
    req.check_method("GET, PUT", "files.get")
    route: Route = "files.put" if req.method == "PUT" else "files.get"
    return req.op(route, file_id=segments[0], file_name=segments[1])


def _multipart(segments: list[str], req: RouteRequest) -> Operation:
    """``<file id>/<name>/multipart/<upload id>/<part number>|complete``."""
    file_id, name, _, upload_id, tail = segments
    if tail == "complete":
        req.check_method("POST", "files.complete_multipart")
        return req.op_with_input(
            "files.complete_multipart", file_id=file_id, file_name=name, upload_id=upload_id
        )
    if not (tail.isdigit() and tail.isascii()):
        raise detail_error(
            404,
            f"No multipart route at {req.path}: PUT each part to .../{MULTIPART}/<uploadId>/<part number>, "
            f"then POST .../{MULTIPART}/<uploadId>/complete",
        )
    req.check_method("PUT", "files.upload_part")
    number = int(tail) if len(tail) < 10 else 0
    if not 1 <= number <= MAX_PARTS:
        raise detail_error(400, f"Part number {tail} is out of range: parts are numbered 1 to {MAX_PARTS}")
    return req.op(
        "files.upload_part", file_id=file_id, file_name=name, upload_id=upload_id, part_number=number
    )
