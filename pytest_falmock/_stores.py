"""State behind one lock: fixtures, jobs, uploads, the journal. Reset is one call."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Deque, Iterable, Optional

from ._fixtures import Fixture, Kind
from ._jobs import Job
from ._options import QueueConfig
from ._records import FalRequest, UnmatchedRequest, Upload, WebhookDelivery

DEFAULT_MAX_JOBS = 50_000
DEFAULT_MAX_JOURNAL = 50_000


class Stores:
    """Everything the engine remembers. All access goes through ``lock``."""

    def __init__(self, max_jobs: int = DEFAULT_MAX_JOBS, max_journal: int = DEFAULT_MAX_JOURNAL) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.lock = threading.RLock()
        self.max_jobs = max_jobs
        #: Fixtures that live for the whole session (files, control API), in order.
        self.session_fixtures: list[Fixture] = []
        #: Per-test fixtures, oldest first (matched newest first).
        self.test_fixtures: list[Fixture] = []
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.journal: Deque[FalRequest] = deque(maxlen=max_journal)
        self.unmatched: list[UnmatchedRequest] = []
        self.uploads: dict[tuple[str, str], Upload] = {}
        self.webhooks: list[WebhookDelivery] = []
        self.queue_config = QueueConfig()
        self.allow_remote_webhooks = False
        #: Bumped by every reset; a request that began before a reset records nothing after it.
        self.generation = 0
        self._request = threading.local()

    # -- fixtures -----------------------------------------------------------------------
    def add_fixture(self, fixture: Fixture, *, session: bool = False) -> None:
        with self.lock:
            (self.session_fixtures if session else self.test_fixtures).append(fixture)

    def candidates(self) -> list[Fixture]:
        return [*reversed(self.test_fixtures), *self.session_fixtures]

    def claim(
        self, kind: Kind, model: str, request_input: Any, *, include_session: bool = True
    ) -> tuple[Optional[Fixture], list[tuple[str, str]]]:
        """The first fixture that serves the request (its use counted), or every reason why none does.

        ``include_session=False`` tries per-test fixtures only (record mode ``all``).
        """
        reasons: list[tuple[str, str]] = []
        with self.lock:
            candidates = self.candidates() if include_session else list(reversed(self.test_fixtures))
            for fixture in candidates:
                reason = fixture.reject_reason(kind, model, request_input)
                if reason is None:
                    fixture.used += 1
                    return fixture, reasons
                reasons.append((fixture.label, reason))
        return None, reasons

    # -- request generations ------------------------------------------------------------
    def begin_request(self) -> int:
        """Mark the calling thread as serving a request of the current generation."""
        generation = self._request.generation = self.generation
        return generation

    def request_generation(self) -> int:
        """The generation the calling thread's request began in (else the current one)."""
        generation: int = getattr(self._request, "generation", self.generation)
        return generation

    def _stale(self, generation: Optional[int] = None) -> bool:
        """True when the work at hand began before the last reset (call with the lock held)."""
        started = getattr(self._request, "generation", None) if generation is None else generation
        return started is not None and started != self.generation

    # -- jobs ---------------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        with self.lock:
            if self._stale():
                return
            self.jobs[job.request_id] = job
            while len(self.jobs) > self.max_jobs:
                self._evict_one()

    def _evict_one(self) -> None:
        for request_id, job in self.jobs.items():
            if job.done:
                del self.jobs[request_id]
                return
        self.jobs.popitem(last=False)

    def job(self, request_id: str) -> Optional[Job]:
        with self.lock:
            return self.jobs.get(request_id)

    # -- journal, uploads, webhooks -----------------------------------------------------
    def record(self, request: FalRequest) -> None:
        with self.lock:
            if not self._stale():
                self.journal.append(request)

    def record_unmatched(self, request: UnmatchedRequest) -> None:
        with self.lock:
            if not self._stale():
                self.unmatched.append(request)

    def add_upload(self, key: tuple[str, str], upload: Upload) -> None:
        with self.lock:
            if not self._stale():
                self.uploads[key] = upload

    def add_webhook(self, delivery: WebhookDelivery, generation: Optional[int] = None) -> None:
        """Record a webhook outcome; ``generation`` is the one the job completed in."""
        with self.lock:
            if not self._stale(generation):
                self.webhooks.append(delivery)

    def snapshot(self, items: Iterable[Any]) -> list[Any]:
        with self.lock:
            return list(items)

    # -- reset --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything a test did; session fixtures stay (their use counts restart)."""
        with self.lock:
            self.generation += 1
            self.test_fixtures.clear()
            for fixture in self.session_fixtures:
                fixture.used = 0
            self.jobs.clear()
            self.journal.clear()
            self.unmatched.clear()
            self.uploads.clear()
            self.webhooks.clear()
            self.queue_config = QueueConfig()
            self.allow_remote_webhooks = False
