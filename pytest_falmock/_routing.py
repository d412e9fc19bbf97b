"""Routing: every accepted wire form of a request becomes one :class:`Operation`.

Routing knows HTTP and URL shapes and nothing else: no stubs, no jobs. Precedence:

1. the control API, ``/__falmock/<name>``;
2. a non-empty ``x-fal-target-url`` header (the real ``@fal-ai/client`` proxy convention);
3. a non-empty ``x-fal-target-host`` header on ``/fal/...`` (the aimock convention);
4. legacy paths ``/fal/queue/submit/{model}``, ``/fal/queue/requests/{id}[...]``, ``/fal/run/{model}``;
5. service-prefixed paths ``/fal/{queue|run|rest|cdn|files}/...``.

Every route is one of :data:`._operation.ROUTES`; the method rules (405 with ``Allow``, ``HEAD`` wherever
``GET`` is allowed) are applied here, once, for fal routes and control routes alike.

The vocabulary (:data:`Route`, :class:`Operation`, :class:`RouteError`) is in :mod:`._operation`;
the path grammar of each fal service in :mod:`._fal_routes`.
"""

from __future__ import annotations

from typing import cast
from urllib.parse import urlsplit

from ._blob import Blob
from ._constants import CDN_HOSTS, QUEUE_HOSTS, REST_HOSTS, RUN_HOSTS, TARGET_HOST_HEADER, TARGET_URL_HEADER
from ._fal_routes import dispatch, submit
from ._headers import Headers
from ._operation import Operation, Route, RouteRequest, detail_error, parse_query
from ._settings import DEFAULT_MAX_INPUT
from ._urls import CONTROL_PREFIX, PREFIX, SERVICES, Service

#: Control routes by name (``/__falmock/<name>``): the route of each method accepted.
CONTROL_ROUTES: dict[str, dict[str, Route]] = {
    "health": {"GET": "control.health"},
    "fixtures": {"POST": "control.fixtures", "DELETE": "control.fixtures_clear"},
    "reset": {"POST": "control.reset"},
    "requests": {"GET": "control.requests"},
    "unmatched": {"GET": "control.unmatched"},
    "advance": {"POST": "control.advance"},
}


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
    raise detail_error(
        400,
        f"Unknown fal host {host!r}: expected queue.fal.run, fal.run, rest.fal.ai or rest.alpha.fal.ai",
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
    max_input: int = DEFAULT_MAX_INPUT,
) -> Operation:
    """Turn one HTTP request into an :class:`Operation`, or raise :class:`RouteError`.

    A JSON body over ``max_input`` bytes is refused (413) before it is decoded."""
    method = method.upper()
    if is_control(path):
        return _control(path, RouteRequest(method, path, base_url, headers, {}, body))
    target_url = headers.get(TARGET_URL_HEADER, "").strip()
    if target_url:
        try:
            parts = urlsplit(target_url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced "[" in the host
            hostname = None
        if not hostname:
            raise detail_error(400, f"x-fal-target-url {target_url!r} is not an absolute URL")
        host = hostname.lower()
        req = RouteRequest(method, path, base_url, headers, parse_query(parts.query), body, host, max_input)
        return dispatch(_service_for_host(host), _segments(parts.path), req)

    under_prefix = path == PREFIX or path.startswith(PREFIX + "/")
    if not under_prefix:
        raise detail_error(404, f"Not a fal_mock route: {path} (every route starts with {PREFIX}/)")
    fal_path = path[len(PREFIX) :]
    query = parse_query(query_string)

    target_host = headers.get(TARGET_HOST_HEADER, "").strip()
    if target_host:
        host = normalize_host(target_host)
        req = RouteRequest(method, path, base_url, headers, query, body, host, max_input)
        return dispatch(_service_for_host(host), _segments(fal_path), req)

    req = RouteRequest(method, path, base_url, headers, query, body, None, max_input)
    segments = _segments(fal_path)
    if len(segments) >= 2 and segments[0] == "queue" and segments[1] == "submit":
        return submit(segments[2:], req)
    if segments and segments[0] in SERVICES:
        return dispatch(cast(Service, segments[0]), segments[1:], req)
    services = ", ".join(f"{PREFIX}/{service}/..." for service in SERVICES)
    raise detail_error(
        404,
        f"No fal route at {path}: send an x-fal-target-url or x-fal-target-host header, or use {services}",
    )


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _control(path: str, req: RouteRequest) -> Operation:
    name = path[len(CONTROL_PREFIX) :].strip("/")
    known = CONTROL_ROUTES.get(name)
    if known is None:
        routes = ", ".join(
            f"{method} {CONTROL_PREFIX}{n}" for n, methods in CONTROL_ROUTES.items() for method in methods
        )
        raise detail_error(
            404, f"Unknown control route {CONTROL_PREFIX}{name}; routes: {routes}", control=True
        )
    req.check_method(", ".join(known), next(iter(known.values())), control=True)
    return req.op(known["GET" if req.method == "HEAD" else req.method])
