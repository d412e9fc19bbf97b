"""Record & replay: forward what no stub serves to fal.ai (or a stand-in), write it down.

The engine's :class:`~pytest_falmock._engine.Upstream` while recording; the core never imports
this module. A queue submit is walked upstream (submit, poll status, fetch result) inside the
local submit; the final result becomes a normal fixture-file entry (``match.model`` +
``match.input``), appended to the target file and handed back as a stub the engine registers,
and the client gets the normal local lifecycle.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlencode

from filelock import Timeout

from ._constants import (
    COMPLETED,
    DUMMY_FAL_KEY,
    ERROR_TYPE_HEADER,
    FAL_HOSTS,
    IN_PROGRESS,
    IN_QUEUE,
    REQUEST_ID_HEADER,
    TARGET_HOST_HEADER,
    TARGET_URL_HEADER,
)
from ._engine import new_request_id
from ._fixture_files import FixtureFileError, parse_entry
from ._net import AnswerTooLarge, fetch, foreign_page, origin
from ._operation import Operation
from ._record_media import MediaRecorder
from ._recording_file import FixtureWriter
from ._reply import Reply
from ._secrets import Redactor, secret_parts
from ._settings import RecordSettings
from ._stubs import Kind, Stub
from ._urls import app_path

#: Status polls start this far apart and double up to ``MAX_POLL_INTERVAL``.
FIRST_POLL_INTERVAL = 0.05
MAX_POLL_INTERVAL = 1.0
#: Headers the caller sent that go upstream as they are (plus every other ``x-fal-*``).
FORWARDED = frozenset({"content-type", "accept", "user-agent"})
NOT_FORWARDED = frozenset({TARGET_URL_HEADER, TARGET_HOST_HEADER, "authorization"})
DEFAULT_HOSTS = {"queue": "queue.fal.run", "run": "fal.run"}
#: The dummy key and its id and secret: what the mock's own clients send, never a secret.
DUMMY_SECRET_PARTS = frozenset(secret_parts(f"Key {DUMMY_FAL_KEY}"))


# -- talking to the upstream ------------------------------------------------------------------
class UpstreamError(Exception):
    """The upstream could not give a recordable answer; the client gets 502."""


@dataclass(frozen=True)
class UpstreamAnswer:
    """One HTTP answer of the upstream, its body parsed as JSON."""

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


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Recorder:
    """Forwards unmatched requests per ``settings`` and writes what they got to the target file."""

    def __init__(self, settings: RecordSettings) -> None:
        if not settings.active or settings.target is None:
            raise ValueError("Recorder needs an active record mode and a target file")
        self.settings = settings
        self.writer = FixtureWriter(settings.target)
        self.media = MediaRecorder(
            settings.target, settings.upstream, settings.media_max, settings.request_timeout
        )
        self._key_redactor = Redactor(settings.credentials.secrets)
        #: Where the key may go: the configured upstream's origin and fal's own hosts.
        upstream = [origin(settings.upstream)] if settings.upstream else []
        self._origins = frozenset({*(f"https://{host}" for host in FAL_HOSTS), *upstream})

    @property
    def forward_all(self) -> bool:
        return self.settings.mode == "all"

    # -- Upstream protocol ------------------------------------------------------------------
    def forward(self, op: Operation, kind: Kind) -> Union[Stub, Reply]:
        assert op.model is not None
        page = foreign_page(op.headers)
        if page is not None:
            message = (
                f"fal_mock does not forward requests from {page} to fal while recording: they would "
                "run on your fal key. Record from a page on localhost or 127.0.0.1 (or from tests); "
                "recorded fixtures replay for every origin."
            )
            return Reply(403, {"detail": message, "error_type": "origin_refused", "model": op.model})
        match: dict[str, Any] = {"endpoint": "fal", "model": op.model}
        if isinstance(op.input, dict):
            match["input"] = op.input
        redactor = self._redactor(op)
        match = redactor.value(match)
        try:
            if not self.forward_all:
                known = self.writer.find(match)  # another xdist worker may have recorded it
                if known is not None:
                    return self._stub(known, match)
            if kind == "queue":
                status, body, error_type = self._walk(op)
            else:
                status, body, error_type = self._run(op)
        except UpstreamError as exc:
            message = redactor.text(f"fal_mock could not record {op.model!r}: {exc}")
            return Reply(
                502,
                {"detail": message, "error_type": "upstream_error", "model": op.model},
                # fal_client retries a 502 it takes for an ingress error; this one is ours
                {REQUEST_ID_HEADER: new_request_id()},
            )
        except FixtureFileError as exc:
            return Reply(500, {"detail": f"fal_mock cannot record: {exc}", "error_type": "record_error"})
        response: dict[str, Any] = {"json": body}
        if status != 200:
            response["status"] = status
        if error_type:
            response["error_type"] = error_type
        entry: dict[str, Any] = {"match": match, "response": response}
        captured = self.media.capture(response["json"], redactor) if status < 400 else None
        if captured is not None and captured.media:
            entry["media"] = captured.media
        # every value written is redacted, whatever its place (headers' values included)
        entry = redactor.value(entry)
        try:
            saved = self.writer.save(
                entry, replace=self.forward_all, media=captured.pending if captured else ()
            )
            stub = self._stub(saved, match)
        except (OSError, FixtureFileError, Timeout) as exc:
            where = self.settings.target
            return Reply(
                500,
                {
                    "detail": f"fal_mock could not write the recording to {where}: {exc}",
                    "error_type": "record_error",
                },
            )
        if captured is not None:
            stub.notes = tuple(redactor.text(note) for note in captured.notes)
        return stub

    def _stub(self, entry: Mapping[str, Any], match: Mapping[str, Any]) -> Stub:
        target = self.settings.target
        assert target is not None
        stub = parse_entry(dict(entry), f"{target} (recorded)", target.parent)
        stub.recording_key = json.dumps(match, sort_keys=True)
        return stub

    # -- requests -----------------------------------------------------------------------------
    def _redactor(self, op: Operation) -> Redactor:
        """Redacts the captured key and the caller's own credentials (each in every encoding)."""
        auth = op.headers.get("authorization", "").strip()
        if not auth:
            return self._key_redactor
        found = {*self.settings.credentials.secrets, *secret_parts(auth)}
        found.difference_update(DUMMY_SECRET_PARTS)
        return Redactor(found)

    def _target(self, op: Operation, service: str) -> _Target:
        host = op.fal_host or DEFAULT_HOSTS[service]
        # the mock delivers webhooks itself (local lifecycle): fal must not call them too
        query = {k: v for k, v in op.query.items() if k != "fal_webhook"}
        return _Target(host, f"/{op.model}", urlencode(query))

    def _headers(self, op: Operation, host: str) -> dict[str, str]:
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

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: Optional[bytes]
    ) -> UpstreamAnswer:
        where = f"{method} {url}"
        target = origin(url)
        if target not in self._origins:
            raise UpstreamError(
                f"refused to {where}: {target} is neither the upstream nor a fal host, "
                "so it is never sent your fal key"
            )
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        settings = self.settings
        try:
            status, answer_headers, raw = fetch(request, settings.request_timeout, settings.max_answer)
        except AnswerTooLarge as exc:
            raise UpstreamError(f"upstream {where}: {exc}") from None
        except (OSError, HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            kind = "timed out" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "failed"
            raise UpstreamError(f"upstream {where} {kind}: {reason}") from None
        if 300 <= status < 400:
            location = answer_headers.get("Location", "")[:300]
            raise UpstreamError(
                f"upstream {where} answered HTTP {status} (a redirect to {location!r}); "
                "fal_mock never follows redirects"
            )
        if status >= 500 or status < 200:
            raise UpstreamError(f"upstream {where} answered HTTP {status}: {_snippet(raw)}")
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):  # nested past the recursion limit is no answer either
            content_type = answer_headers.get("Content-Type", "no Content-Type")
            raise UpstreamError(
                f"upstream {where} answered HTTP {status} with a non-JSON body "
                f"({content_type}): {_snippet(raw)}"
            ) from None
        return UpstreamAnswer(status, {k.lower(): v for k, v in answer_headers.items()}, parsed)

    def _run(self, op: Operation) -> tuple[int, Any, Optional[str]]:
        target = self._target(op, "run")
        headers = self._headers(op, target.host)
        body = op.body.read() or None
        answer = self._fetch(op.method, target.url(self.settings.upstream), headers, body)
        error_type = answer.headers.get(ERROR_TYPE_HEADER) if answer.status >= 400 else None
        return answer.status, answer.body, error_type

    def _walk(self, op: Operation) -> tuple[int, Any, Optional[str]]:
        assert op.model is not None
        target = self._target(op, "queue")
        headers = self._headers(op, target.host)
        submit_url = target.url(self.settings.upstream)
        submitted = self._fetch("POST", submit_url, headers, op.body.read())
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


def recorder_for(settings: RecordSettings) -> Optional[Recorder]:
    """The upstream a mock needs to record per ``settings``; None when not recording."""
    return Recorder(settings) if settings.active else None
