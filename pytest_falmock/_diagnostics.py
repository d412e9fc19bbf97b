"""Failure text for people: what was asked, what was registered, and why nothing matched."""

from __future__ import annotations

from typing import Sequence

from ._journal import FalRequest, UnmatchedRequest
from ._stubs import summarize

HOW_TO_RELAX = (
    "If these requests are expected, register a fixture for them, or mark the test with "
    "@pytest.mark.fal_mock(allow_unmatched=True)."
)


def unmatched_message(unmatched: Sequence[UnmatchedRequest]) -> str:
    count = len(unmatched)
    noun = "request" if count == 1 else "requests"
    lines = [f"fal_mock: {count} {noun} matched no registered fixture:"]
    for req in unmatched:
        lines.append("")
        lines.append(f"- {req.method} {req.path} (route {req.route}, model {req.model!r})")
        lines.append(f"  input: {summarize(req.input)}")
        if not req.reasons:
            lines.append("  no fixtures were registered")
            continue
        lines.append("  registered fixtures:")
        lines.extend(f"    * {label}: {reason}" for label, reason in req.reasons)
    lines.append("")
    lines.append(HOW_TO_RELAX)
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
        lines.append("No submit, run or stream request reached the mock.")
    return "\n".join(lines)
