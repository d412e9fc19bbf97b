"""Routing: every accepted wire form of a request becomes one :class:`Operation`.

Routing knows HTTP and URL shapes and nothing else: no fixtures, no jobs. Precedence:

1. a non-empty ``x-fal-target-url`` header (the real ``@fal-ai/client`` proxy convention),
2. a non-empty ``x-fal-target-host`` header on ``/fal/...`` (the aimock convention),
3. legacy paths ``/fal/queue/submit/{model}``, ``/fal/queue/requests/{id}[...]``, ``/fal/run/{model}``,
4. service-prefixed paths ``/fal/{queue|run|rest|cdn|files}/...``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional
from urllib.parse import parse_qsl, urlsplit

from ._constants import (
    CDN_HOSTS,
    PROXY_PREFIX,
    QUEUE_HOSTS,
    REST_HOSTS,
    RUN_HOSTS,
    TARGET_HOST_HEADER,
    TARGET_URL_HEADER,
)
from ._headers import Headers

# Journal route names.
QUEUE_SUBMIT = "queue.submit"
QUEUE_STATUS = "queue.status"
QUEUE_STATUS_STREAM = "queue.status_stream"
QUEUE_RESULT = "queue.result"
QUEUE_CANCEL = "queue.cancel"
RUN = "run"
RUN_STREAM = "run.stream"
STORAGE_TOKEN = "storage.token"
STORAGE_INITIATE = "storage.initiate"
REALTIME_TOKEN = "realtime.token"
CDN_UPLOAD = "cdn.upload"
FILES_PUT = "files.put"
FILES_GET = "files.get"

#: Routes whose body is a JSON model input.
INPUT_ROUTES = frozenset({QUEUE_SUBMIT, RUN, RUN_STREAM})


@dataclass(frozen=True)
class Operation:
    """One parsed request, whatever wire form it arrived in."""

    route: str
    method: str
    path: str
    base_url: str
    headers: Headers
    query: Mapping[str, str]
    body: bytes = b""
    model: Optional[str] = None
    request_id: Optional[str] = None
    input: Any = None
    file_id: Optional[str] = None
    file_name: Optional[str] = None
    #: The fal host a routing header named (``queue.fal.run``, ...); None for path-routed requests.
    fal_host: Optional[str] = None


class RouteError(Exception):
    """The request cannot be routed; carries the HTTP answer."""

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        allow: Optional[str] = None,
        route: Optional[str] = None,
        model: Optional[str] = None,
    ) -> None:
        super().__init__(f"{status} {body!r}")
        self.status = status
        self.body = body
        self.allow = allow
        self.route = route
        self.model = model


def _detail(status: int, message: str, **kwargs: Any) -> RouteError:
    return RouteError(status, {"detail": message}, **kwargs)


def invalid_json(message: str, route: str, model: Optional[str]) -> RouteError:
    return RouteError(
        400,
        {"error": {"code": "invalid_json", "type": "invalid_request_error", "message": message}},
        route=route,
        model=model,
    )


def normalize_host(value: str) -> str:
    """``HTTPS://Queue.fal.run:443/x`` -> ``queue.fal.run``."""
    host = value.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host.startswith("["):  # IPv6 literal: keep as is, minus the port
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _service_for_host(host: str) -> str:
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
    body: bytes
    fal_host: Optional[str] = None

    def op(self, route: str, **kwargs: Any) -> Operation:
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


def parse(
    method: str,
    path: str,
    query_string: str,
    headers: Headers,
    body: bytes,
    base_url: str,
) -> Operation:
    """Turn one HTTP request into an :class:`Operation`, or raise :class:`RouteError`."""
    method = method.upper()
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

    under_prefix = path == PROXY_PREFIX or path.startswith(PROXY_PREFIX + "/")
    if not under_prefix:
        raise _detail(404, f"Not a fal_mock route: {path} (every route starts with {PROXY_PREFIX}/)")
    fal_path = path[len(PROXY_PREFIX) :]
    req = _Request(method, path, base_url, headers, parse_query(query_string), body)

    target_host = headers.get(TARGET_HOST_HEADER, "").strip()
    if target_host:
        host = normalize_host(target_host)
        req = _Request(method, path, base_url, headers, req.query, body, host)
        return _dispatch(_service_for_host(host), _segments(fal_path), req)

    segments = _segments(fal_path)
    if len(segments) >= 2 and segments[0] == "queue" and segments[1] == "submit":
        return _submit(segments[2:], req)
    if segments and segments[0] in ("queue", "run", "rest", "cdn", "files"):
        return _dispatch(segments[0], segments[1:], req)
    raise _detail(
        404,
        f"No fal route at {path}: send an x-fal-target-url or x-fal-target-host header, "
        f"or use {PROXY_PREFIX}/queue/..., {PROXY_PREFIX}/run/..., {PROXY_PREFIX}/rest/..., "
        f"{PROXY_PREFIX}/cdn/... or {PROXY_PREFIX}/files/...",
    )


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _dispatch(service: str, segments: list[str], req: _Request) -> Operation:
    if service == "queue":
        return _queue(segments, req)
    if service == "run":
        return _run(segments, req)
    if service == "rest":
        return _rest(segments, req)
    if service == "cdn":
        return _cdn(segments, req)
    return _files(segments, req)


def _method(req: _Request, allowed: str, route: str, model: Optional[str] = None) -> None:
    methods = allowed.split(", ")
    if req.method not in methods and not (req.method == "HEAD" and "GET" in methods):
        raise _detail(
            405,
            f"Method {req.method} is not allowed on {req.path} ({route}); use {allowed}",
            allow=f"{allowed}, OPTIONS",
            route=route,
            model=model,
        )


def parse_input(body: bytes, route: str, model: Optional[str]) -> Any:
    """An empty body is ``None``; anything else must be JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise invalid_json(f"Malformed JSON in request body: {exc}", route, model) from None


def _queue(segments: list[str], req: _Request) -> Operation:
    for i in range(len(segments) - 2, -1, -1):
        if segments[i] != "requests":
            continue
        tail = segments[i + 1 :]
        prefix = "/".join(segments[:i]) or None
        rid = tail[0]
        if len(tail) == 1:
            _method(req, "GET", QUEUE_RESULT, prefix)
            return req.op(QUEUE_RESULT, model=prefix, request_id=rid)
        if tail[1:] == ["status"]:
            _method(req, "GET", QUEUE_STATUS, prefix)
            return req.op(QUEUE_STATUS, model=prefix, request_id=rid)
        if tail[1:] == ["status", "stream"]:
            _method(req, "GET", QUEUE_STATUS_STREAM, prefix)
            return req.op(QUEUE_STATUS_STREAM, model=prefix, request_id=rid)
        if tail[1:] == ["cancel"]:
            _method(req, "PUT", QUEUE_CANCEL, prefix)
            return req.op(QUEUE_CANCEL, model=prefix, request_id=rid)
    return _submit(segments, req)


def _submit(segments: list[str], req: _Request) -> Operation:
    if not segments:
        raise _detail(404, f"No model id in {req.path}: submit to .../{{owner}}/{{model}}")
    model = "/".join(segments)
    _method(req, "POST", QUEUE_SUBMIT, model)
    return req.op(QUEUE_SUBMIT, model=model, input=parse_input(req.body, QUEUE_SUBMIT, model))


def _run(segments: list[str], req: _Request) -> Operation:
    if not segments:
        raise _detail(404, f"No model id in {req.path}: run .../{{owner}}/{{model}}")
    if len(segments) > 1 and segments[-1] == "stream":
        model = "/".join(segments[:-1])
        _method(req, "POST", RUN_STREAM, model)
        return req.op(RUN_STREAM, model=model, input=parse_input(req.body, RUN_STREAM, model))
    model = "/".join(segments)
    if req.method in ("GET", "HEAD") and not req.body:
        return req.op(RUN, model=model, input=dict(req.query) or None)
    return req.op(RUN, model=model, input=parse_input(req.body, RUN, model))


def _rest(segments: list[str], req: _Request) -> Operation:
    path = "/".join(segments)
    if path == "storage/auth/token":
        _method(req, "POST", STORAGE_TOKEN)
        return req.op(STORAGE_TOKEN)
    if path == "storage/upload/initiate":
        _method(req, "POST", STORAGE_INITIATE)
        return req.op(STORAGE_INITIATE, input=parse_input(req.body, STORAGE_INITIATE, None))
    if path in ("storage/upload/initiate-multipart", "storage/upload/complete-multipart"):
        raise _detail(501, "multipart uploads are not supported by fal_mock")
    if path == "tokens":
        return req.op(REALTIME_TOKEN)
    raise _detail(404, f"Unknown fal REST route: /{path}")


def _cdn(segments: list[str], req: _Request) -> Operation:
    path = "/".join(segments)
    if path == "files/upload":
        _method(req, "POST", CDN_UPLOAD)
        return req.op(CDN_UPLOAD)
    if path.startswith("files/upload/multipart"):
        raise _detail(501, "multipart uploads are not supported by fal_mock")
    raise _detail(404, f"Unknown fal CDN route: /{path}")


def _files(segments: list[str], req: _Request) -> Operation:
    if len(segments) != 2 or any(s in (".", "..") or "\\" in s or "\x00" in s for s in segments):
        raise _detail(404, f"No uploaded file at {req.path}")
    _method(req, "GET, PUT", FILES_GET)
    route = FILES_PUT if req.method == "PUT" else FILES_GET
    return req.op(route, file_id=segments[0], file_name=segments[1])
