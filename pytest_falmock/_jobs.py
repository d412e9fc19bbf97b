"""The queue job state machine: IN_QUEUE -> IN_PROGRESS -> COMPLETED, driven by status polls.

Pure logic, no locking: callers hold the store's lock while they touch a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from ._clock import Clock
from ._constants import CANCELLED_ERROR_TYPE, CANCELLED_MESSAGE, COMPLETED, IN_PROGRESS, IN_QUEUE
from ._urls import job_url


@dataclass(frozen=True)
class QueueConfig:
    """How many status polls a job spends in each state.

    On the k-th status call a job is ``IN_QUEUE`` while ``k < in_progress``,
    ``IN_PROGRESS`` while ``k < completed`` and ``COMPLETED`` from ``k >= completed``.
    ``completed == 0`` means the job is complete at submit.
    """

    in_progress: int = 0
    completed: int = 0


_stamp: tuple[int, str] = (0, "")


def _stamp_at(seconds: float) -> str:
    """``seconds`` (epoch) as ISO 8601 UTC with milliseconds, formatted once per ms."""
    global _stamp
    ms = int(seconds * 1000)
    cached = _stamp
    if cached[0] == ms:
        return cached[1]
    moment = datetime.fromtimestamp(ms // 1000, timezone.utc).replace(microsecond=ms % 1000 * 1000)
    text = moment.isoformat(timespec="milliseconds")
    _stamp = (ms, text)
    return text


def _log(message: str, clock: Clock) -> dict[str, Any]:
    return {"timestamp": _stamp_at(clock.time()), "level": "INFO", "source": "user", "message": message}


@dataclass
class Job:
    request_id: str
    model: str
    config: QueueConfig
    base_url: str
    result_status: int
    result_body: Any
    #: The mock's clock: latency and log timestamps are read from it.
    clock: Clock = field(repr=False)
    error_type: Optional[str] = None
    #: Extra headers of the result answer (a stub's ``headers``, a start timeout's).
    result_headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    webhook_url: Optional[str] = None
    #: Why the webhook is not sent, whatever its URL (it was asked for by another site's page).
    webhook_refused: Optional[str] = None
    submitted_at: float = field(init=False)
    polls: int = 0
    state: str = IN_QUEUE
    completed_at: Optional[float] = None
    cancelled: bool = False
    logs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.submitted_at = self.clock.monotonic()
        self.logs.append(_log("Job enqueued.", self.clock))
        if self.config.completed == 0 and self.latency <= 0:
            self._complete(self.submitted_at)

    @property
    def url(self) -> str:
        return job_url(self.base_url, self.model, self.request_id)

    @property
    def done(self) -> bool:
        return self.state == COMPLETED

    @property
    def failed(self) -> bool:
        return self.cancelled or self.result_status >= 400

    def _state_for(self, polls: int, now: float) -> str:
        if polls < self.config.in_progress:
            return IN_QUEUE
        if polls < self.config.completed or now < self.submitted_at + self.latency:
            return IN_PROGRESS
        return COMPLETED

    def poll(self) -> bool:
        """Count one status call and move the job on; True when it just completed."""
        if self.done:
            return False
        now = self.clock.monotonic()
        self.polls += 1
        new = self._state_for(self.polls, now)
        if new == self.state:
            return False
        if new == COMPLETED:
            self._complete(now)
            return True
        self.state = new
        self.logs.append(_log("Job started processing.", self.clock))
        return False

    def complete_if_due(self) -> bool:
        """Complete a job that only waited for time to pass (its polls are done); True if it did."""
        if self.done:
            return False
        now = self.clock.monotonic()
        if self._state_for(self.polls, now) != COMPLETED:
            return False
        self._complete(now)
        return True

    def time_left(self) -> float:
        """Seconds of latency still to run (0 when it has)."""
        return max(0.0, self.submitted_at + self.latency - self.clock.monotonic())

    @property
    def waits_for_time(self) -> bool:
        """Pending, with a latency still to run."""
        return not self.done and self.latency > 0

    def _complete(self, now: float) -> None:
        self.state = COMPLETED
        self.completed_at = now
        if not self.cancelled:
            self.logs.append(_log("Job completed.", self.clock))

    def cancel(self) -> bool:
        """Cancel a pending job; False when it had already completed."""
        if self.done:
            return False
        self.cancelled = True
        self.logs.append(_log("Job cancelled.", self.clock))
        self._complete(self.clock.monotonic())
        return True

    @property
    def error(self) -> Optional[str]:
        if self.cancelled:
            return CANCELLED_MESSAGE
        if self.result_status < 400:
            return None
        detail = self.result_body.get("detail") if isinstance(self.result_body, dict) else None
        if isinstance(detail, str):
            return detail
        return f"Request failed with status code {self.result_status}"

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.state,
            "request_id": self.request_id,
            "response_url": self.url,
            "logs": list(self.logs),
        }
        if self.state == IN_QUEUE:
            body["queue_position"] = self.config.in_progress - self.polls
        elif self.state == IN_PROGRESS:
            body["queue_position"] = 0
        else:
            assert self.completed_at is not None
            never_ran = self.cancelled and self.polls == 0
            elapsed = 0.0 if never_ran else round(self.completed_at - self.submitted_at, 6)
            body["metrics"] = {"inference_time": elapsed}
            if self.failed:
                body["error"] = self.error
                body["error_type"] = (
                    CANCELLED_ERROR_TYPE if self.cancelled else self.error_type or "http_error"
                )
        return body
