"""Failure text for people: what was asked, what was registered, and why nothing matched."""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, TextIO
from urllib.parse import urlsplit

from ._constants import TARGET_URL_HEADER
from ._journal import FalRequest, UnmatchedRequest
from ._secrets import redact_text
from ._stubs import printable, summarize

#: Reasons a log line shows for an unmatched request (the rest are counted).
LOGGED_REASONS = 3

HOW_TO_RELAX = (
    "If these requests are expected, register a fixture for them, or mark the test with "
    "@pytest.mark.fal_mock(allow_unmatched=True)."
)


def unmatched_message(unmatched: Sequence[UnmatchedRequest], dropped: int = 0) -> str:
    """``dropped``: unmatched requests past the kept ones (``Settings.max_unmatched``)."""
    count = len(unmatched) + dropped
    noun = "request" if count == 1 else "requests"
    lines = [f"fal_mock: {count} {noun} matched no registered fixture:"]
    for req in unmatched:
        lines.append("")
        lines.append(f"- {req.method} {printable(req.path)} (route {req.route}, model {req.model!r})")
        lines.append(f"  input: {summarize(req.input)}")
        if not req.reasons:
            lines.append("  no fixtures were registered")
            continue
        lines.append("  registered fixtures:")
        lines.extend(f"    * {label}: {reason}" for label, reason in req.reasons)
    if dropped:
        lines.append("")
        lines.append(f"... and {dropped} more, not kept (the first {len(unmatched)} are).")
    lines.append("")
    lines.append(HOW_TO_RELAX)
    return "\n".join(lines)


def handler_errors_message(errors: Sequence[str], dropped: int = 0) -> str:
    """The test's realtime replies or WebSocket handlers that raised or answered nonsense
    (``dropped``: failures past the kept ones)."""
    count = len(errors) + dropped
    noun = "call" if count == 1 else "calls"
    lines = [
        f"fal_mock: {count} {noun} of this test's realtime reply callables or WebSocket handlers "
        "failed (the client got an x-fal-error):"
    ]
    lines.extend(f"\n- {error.rstrip()}" for error in errors)
    if dropped:
        lines.append(f"\n... and {dropped} more, not kept (the first {len(errors)} are).")
    return "\n".join(lines)


def calls_message(
    spec: str, times: int | None, calls: Sequence[FalRequest], others: Sequence[FalRequest]
) -> str:
    expected = "at least one call" if times is None else f"{times} call{'s' if times != 1 else ''}"
    lines = [f"fal_mock.assert_called({spec}): expected {expected}, got {len(calls)}."]
    if calls:
        lines.append("Matching calls:")
        lines.extend(f"  - {c}" for c in calls)
    if others:
        lines.append("Other model calls:")
        lines.extend(f"  - {c}" for c in others)
    if not calls and not others:
        lines.append("No submit, run, stream or realtime message reached the mock.")
    return "\n".join(lines)


def _target(request: FalRequest) -> str:
    """Where the request went: its path, or the fal URL a proxy header named (no query string)."""
    target = request.headers.get(TARGET_URL_HEADER, "").strip()
    if not target:
        return request.path
    try:
        parts = urlsplit(target)
        where = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    except ValueError:
        where = "(malformed x-fal-target-url)"
    return f"{where} via {request.path}"


def request_line(
    request: FalRequest, unmatched: Optional[UnmatchedRequest] = None, secrets: Sequence[str] = ()
) -> str:
    """One log line for a served request: method, where, status, route and model; an
    unmatched one ends with why each stub refused it. Headers, query strings and bodies are
    never shown (no credential, ``fal_jwt_token`` or webhook URL); ``secrets`` are redacted
    from the rest."""
    about = [f"route {request.route}" if request.route else "unrouted"]
    if request.model:
        about.append(f"model {printable(request.model)}")
    where = printable(_target(request))  # decoded from what the client sent: no escape sequences
    line = f"{request.method} {where} -> {request.status_code} ({', '.join(about)})"
    if unmatched is not None:
        reasons = [f"{label}: {reason}" for label, reason in unmatched.reasons]
        shown = "; ".join(reasons[:LOGGED_REASONS]) or "no fixtures are registered"
        more = len(reasons) - LOGGED_REASONS
        line += f" UNMATCHED: {shown}" + (f" (+{more} more)" if more > 0 else "")
    return "fal-mock: " + redact_text(line, secrets)


class RequestLog:
    """A request listener (:meth:`FalMock.add_request_listener`) that writes one
    :func:`request_line` per request to ``stream``."""

    def __init__(self, stream: TextIO, secrets: Sequence[str] = ()) -> None:
        self.stream = stream
        self.secrets = tuple(secrets)

    def __call__(self, request: FalRequest, unmatched: Optional[UnmatchedRequest]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the log went away (closed pipe): serve on
            print(request_line(request, unmatched, self.secrets), file=self.stream, flush=True)
