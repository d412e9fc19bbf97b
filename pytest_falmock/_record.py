"""Record & replay: forward what no fixture serves to fal.ai (or a stand-in), write it down.

Sits on top of the engine (``Engine.upstream``); the core never imports it. A queue submit
is walked upstream (submit, poll status, fetch result) inside the local submit; the final
result becomes a normal fixture entry (``match.model`` + ``match.input``), appended to the
target file and registered at once, and the client gets the normal local lifecycle.
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union
from urllib.parse import urlencode, urlsplit

from filelock import Timeout

from . import _routing as routing
from ._constants import (
    COMPLETED,
    DUMMY_FAL_KEY,
    ERROR_TYPE_HEADER,
    IN_PROGRESS,
    IN_QUEUE,
    REQUEST_ID_HEADER,
    TARGET_HOST_HEADER,
    TARGET_URL_HEADER,
)
from ._fixture_files import FixtureFileError, parse_entry
from ._fixtures import Fixture, Kind
from ._jobs import app_path
from ._options import FalMockUsageError
from ._record_file import Credentials, FixtureWriter, redact, redact_text, secret_parts
from ._reply import Reply
from ._stores import Stores

if TYPE_CHECKING:
    from ._mock import FalMock

RECORD_MODES = ("none", "once", "new", "all")
#: Seconds one upstream HTTP request may take.
REQUEST_TIMEOUT = 30.0
#: Seconds a whole queue walk (submit, polls, result) may take.
WALK_TIMEOUT = 15 * 60.0
#: Status polls start this far apart and double up to ``MAX_POLL_INTERVAL``.
FIRST_POLL_INTERVAL = 0.05
MAX_POLL_INTERVAL = 1.0
#: Upstream 4xx answers that say nothing about the request itself: never recorded (502).
#: Headers the caller sent that go upstream as they are (plus every other ``x-fal-*``).
FORWARDED = frozenset({"content-type", "accept", "user-agent"})
NOT_FORWARDED = frozenset({TARGET_URL_HEADER, TARGET_HOST_HEADER, "authorization"})
DEFAULT_HOSTS = {"queue": "queue.fal.run", "run": "fal.run"}


# -- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordSettings:
    """How (and whether) this session records. ``active`` is False for ``none`` and for
    ``once`` when the target file already existed at session start."""

    mode: str
    target: Optional[Path] = None
    upstream: Optional[str] = None
    credentials: Credentials = field(default_factory=Credentials)
    target_existed: bool = False
    request_timeout: float = REQUEST_TIMEOUT
    walk_timeout: float = WALK_TIMEOUT

    @property
    def recording(self) -> bool:
        """A record mode other than ``none`` was asked for."""
        return self.mode != "none"

    @property
    def active(self) -> bool:
        return self.recording and not (self.mode == "once" and self.target_existed)


def check_upstream(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise FalMockUsageError(
            f"{where}: expected an http(s) base URL such as http://127.0.0.1:8000, got {url!r}"
        )
    return url.rstrip("/")


def resolve(
    mode: str,
    targets: Sequence[Path],
    upstream: Optional[str],
    *,
    where: str,
    fixtures_option: str,
    credentials: Optional[Credentials] = None,
    target_existed: Optional[bool] = None,
) -> RecordSettings:
    """Validate the record options; the target is the last fixture path given."""
    if mode not in RECORD_MODES:
        raise FalMockUsageError(
            f"{where}: record mode must be one of {', '.join(RECORD_MODES)}, got {mode!r}"
        )
    url = check_upstream(upstream, where) if upstream else None
    if mode == "none":
        return RecordSettings("none", upstream=url)
    if not targets:
        raise FalMockUsageError(
            f"{where}: record mode {mode!r} needs {fixtures_option} PATH, the JSON fixture file "
            "recordings are written to (created if missing)"
        )
    target = targets[-1]
    if target.is_dir():
        raise FalMockUsageError(
            f"{where}: the record target {target} is a directory; name a JSON file "
            f"(e.g. {fixtures_option} {target / 'recorded.json'})"
        )
    return RecordSettings(
        mode,
        target,
        url,
        credentials if credentials is not None else Credentials.from_env(),
        target.exists() if target_existed is None else target_existed,
    )


# -- talking to the upstream ------------------------------------------------------------------
class UpstreamError(Exception):
    """The upstream could not give a recordable answer; the client gets 502."""


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass(frozen=True)
class _Target:
    host: str
    path: str
    query: str

    def url(self, upstream: Optional[str]) -> str:
        base = upstream if upstream else f"https://{self.host}"
        return base + self.path + (f"?{self.query}" if self.query else "")


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DEFAULT = urllib.request.build_opener()


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Recorder:
    """The engine's :class:`~pytest_falmock._engine.Upstream` while recording."""

    def __init__(self, settings: RecordSettings, stores: Stores) -> None:
        if not settings.active or settings.target is None:
            raise ValueError("Recorder needs an active record mode and a target file")
        self.settings = settings
        self.stores = stores
        self.writer = FixtureWriter(settings.target)
        #: Fixtures recorded in this process, by their match (replaced in mode ``all``).
        self._recorded: dict[str, Fixture] = {}

    @property
    def forward_all(self) -> bool:
        return self.settings.mode == "all"

    # -- Upstream protocol ------------------------------------------------------------------
    def forward(self, op: routing.Operation, kind: Kind) -> Union[Fixture, Reply]:
        assert op.model is not None
        match: dict[str, Any] = {"endpoint": "fal", "model": op.model}
        if isinstance(op.input, dict):
            match["input"] = op.input
        secrets = self._secrets(op)
        match = redact(match, secrets)
        try:
            if not self.forward_all:
                known = self.writer.find(match)  # another xdist worker may have recorded it
                if known is not None:
                    return self._register(known, match)
            if kind == "queue":
                status, body, error_type = self._walk(op)
            else:
                status, body, error_type = self._run(op)
        except UpstreamError as exc:
            message = redact_text(f"fal_mock could not record {op.model!r}: {exc}", secrets)
            return Reply(
                502,
                {"detail": message, "error_type": "upstream_error", "model": op.model},
                # fal_client retries a 502 it takes for an ingress error; this one is ours
                {REQUEST_ID_HEADER: str(uuid.uuid4())},
            )
        except FixtureFileError as exc:
            return Reply(500, {"detail": f"fal_mock cannot record: {exc}", "error_type": "record_error"})
        response: dict[str, Any] = {"json": redact(body, secrets)}
        if status != 200:
            response["status"] = status
        if error_type:
            response["error_type"] = error_type
        entry = {"match": match, "response": response}
        try:
            self.writer.save(entry, replace=self.forward_all)
        except (OSError, FixtureFileError, Timeout) as exc:
            where = self.settings.target
            return Reply(
                500,
                {
                    "detail": f"fal_mock could not write the recording to {where}: {exc}",
                    "error_type": "record_error",
                },
            )
        return self._register(entry, match)

    def _register(self, entry: Mapping[str, Any], match: Mapping[str, Any]) -> Fixture:
        fixture = parse_entry(dict(entry), f"{self.settings.target} (recorded)")
        key = json.dumps(match, sort_keys=True)
        with self.stores.lock:
            old = self._recorded.get(key)
            sessions = self.stores.session_fixtures
            if old is not None and old in sessions:
                sessions[sessions.index(old)] = fixture
            else:
                sessions.append(fixture)
            self._recorded[key] = fixture
        return fixture

    # -- requests -----------------------------------------------------------------------------
    def _secrets(self, op: routing.Operation) -> tuple[str, ...]:
        found = set(self.settings.credentials.secrets)
        auth = op.headers.get("authorization", "").strip()
        if auth:
            found.update(secret_parts(auth))
        found.discard(DUMMY_FAL_KEY)
        return tuple(sorted(found, key=len, reverse=True))

    def _target(self, op: routing.Operation, service: str) -> _Target:
        host = op.fal_host or DEFAULT_HOSTS[service]
        # the mock delivers webhooks itself (local lifecycle): fal must not call them too
        query = {k: v for k, v in op.query.items() if k != "fal_webhook"}
        return _Target(host, f"/{op.model}", urlencode(query))

    def _headers(self, op: routing.Operation, host: str) -> dict[str, str]:
        headers: dict[str, str] = {"Accept": "application/json"}
        for name, value in op.headers.items():
            lower = name.lower()
            if lower in FORWARDED or (lower.startswith("x-fal-") and lower not in NOT_FORWARDED):
                headers[name] = value
        auth = op.headers.get("authorization", "").strip()
        if not auth or auth == f"Key {DUMMY_FAL_KEY}":
            key = self.settings.credentials.key
            auth = f"Key {key}" if key else ""
        if auth:
            headers["Authorization"] = auth
        if self.settings.upstream:
            headers[TARGET_HOST_HEADER] = host
        return headers

    def _fetch(self, method: str, url: str, headers: Mapping[str, str], body: Optional[bytes]) -> _Answer:
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        opener = _DIRECT if _is_loopback(url) else _DEFAULT
        where = f"{method} {url}"
        try:
            try:
                with opener.open(request, timeout=self.settings.request_timeout) as response:
                    status, answer_headers, raw = response.status, response.headers, response.read()
            except urllib.error.HTTPError as exc:
                status, answer_headers, raw = exc.code, exc.headers, exc.read()
        except (OSError, HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            kind = "timed out" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "failed"
            raise UpstreamError(f"upstream {where} {kind}: {reason}") from None
        if status >= 500 or status < 200 or 300 <= status < 400:
            raise UpstreamError(f"upstream {where} answered HTTP {status}: {_snippet(raw)}")
        try:
            parsed = json.loads(raw)
        except ValueError:
            content_type = answer_headers.get("Content-Type", "no Content-Type")
            raise UpstreamError(
                f"upstream {where} answered HTTP {status} with a non-JSON body "
                f"({content_type}): {_snippet(raw)}"
            ) from None
        return _Answer(status, {k.lower(): v for k, v in answer_headers.items()}, parsed)

    def _run(self, op: routing.Operation) -> tuple[int, Any, Optional[str]]:
        target = self._target(op, "run")
        headers = self._headers(op, target.host)
        body = op.body if op.body else None
        answer = self._fetch(op.method, target.url(self.settings.upstream), headers, body)
        error_type = answer.headers.get(ERROR_TYPE_HEADER) if answer.status >= 400 else None
        return answer.status, answer.body, error_type

    def _walk(self, op: routing.Operation) -> tuple[int, Any, Optional[str]]:
        assert op.model is not None
        target = self._target(op, "queue")
        headers = self._headers(op, target.host)
        submit_url = target.url(self.settings.upstream)
        submitted = self._fetch("POST", submit_url, headers, op.body or b"")
        if submitted.status >= 400:  # e.g. a validation error at submit
            return submitted.status, submitted.body, submitted.headers.get(ERROR_TYPE_HEADER)
        envelope = submitted.body
        if not isinstance(envelope, dict) or not isinstance(envelope.get("request_id"), str):
            raise UpstreamError(
                f"upstream POST {submit_url} answered without a request_id: {envelope!r:.200}"
            )
        base = self.settings.upstream or f"https://{target.host}"
        job_url = f"{base}/{app_path(op.model)}/requests/{envelope['request_id']}"
        status_url = str(envelope.get("status_url") or job_url + "/status")
        response_url = str(envelope.get("response_url") or job_url)
        deadline = time.monotonic() + self.settings.walk_timeout
        delay = FIRST_POLL_INTERVAL
        while True:
            polled = self._fetch("GET", status_url, headers, None)
            state = polled.body.get("status") if isinstance(polled.body, dict) else None
            if polled.status >= 400:
                raise UpstreamError(
                    f"upstream GET {status_url} answered HTTP {polled.status}: {polled.body!r:.200}"
                )
            if state == COMPLETED:
                break
            if state not in (IN_QUEUE, IN_PROGRESS):
                raise UpstreamError(f"upstream GET {status_url} answered an unknown status {state!r}")
            if time.monotonic() + delay > deadline:
                raise UpstreamError(
                    f"upstream job {envelope['request_id']} did not complete within "
                    f"{self.settings.walk_timeout:g} s (timed out)"
                )
            time.sleep(delay)
            delay = min(delay * 2, MAX_POLL_INTERVAL)
        result = self._fetch("GET", response_url, headers, None)
        if result.status < 400:
            return result.status, result.body, None
        error_type = result.headers.get(ERROR_TYPE_HEADER)
        if (
            not error_type
            and isinstance(polled.body, dict)
            and isinstance(polled.body.get("error_type"), str)
        ):
            error_type = polled.body["error_type"]
        return result.status, result.body, error_type


def attach(mock: FalMock, settings: RecordSettings) -> Optional[Recorder]:
    """Make ``mock`` record per ``settings``; None (nothing attached) when not recording."""
    if not settings.active:
        return None
    recorder = Recorder(settings, mock._stores)
    mock._engine.upstream = recorder
    return recorder
