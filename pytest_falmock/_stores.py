"""State behind one lock: stubs, jobs, files, the journal. Reset is one call. State only."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Iterable, Optional

from ._files import FileEntry, FileKey, FileStore
from ._jobs import Job
from ._journal import FalRequest, UnmatchedRequest, WebhookDelivery
from ._settings import DEFAULT_MAX_JOBS, DEFAULT_MAX_UNMATCHED
from ._stubs import Kind, Stub

DEFAULT_MAX_JOURNAL = 50_000
#: Evicted job ids remembered, so polling one says why it is gone.
MAX_EVICTED = 1_000


class Stores:
    """Everything the engine remembers. All access goes through ``lock``.

    Jobs at their bound (``max_jobs``): a new job evicts the job that finished first; only when
    every job is still pending does it evict the oldest pending one (its polls then answer 404,
    naming the bound). Both are O(1): finished and pending ids are kept in two ordered dicts.
    """

    def __init__(
        self,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_journal: int = DEFAULT_MAX_JOURNAL,
        max_unmatched: int = DEFAULT_MAX_UNMATCHED,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.lock = threading.RLock()
        self.max_jobs = max_jobs
        self.max_unmatched = max_unmatched
        #: Stubs that live for the whole session (files, control API, recordings), in order.
        self.session_stubs: list[Stub] = []
        #: Per-test stubs, oldest first (matched newest first).
        self.test_stubs: list[Stub] = []
        self.jobs: dict[str, Job] = {}
        #: Ids of pending jobs (submit order) and of finished ones (completion order).
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._evicted: OrderedDict[str, None] = OrderedDict()
        #: Pending jobs with a latency still to run (completed by the clock, see ``Engine.tick``).
        self.timed_jobs: dict[str, Job] = {}
        self.journal: Deque[FalRequest] = deque(maxlen=max_journal)
        self.unmatched: Deque[UnmatchedRequest] = deque(maxlen=max_unmatched)
        #: Unmatched requests not kept because ``unmatched`` was full.
        self.unmatched_dropped = 0
        #: Uploads, added, generated and recorded files (shares ``lock``).
        self.files = FileStore(self.lock)
        self.webhooks: list[WebhookDelivery] = []
        #: Warnings for the test (e.g. a recording that kept a media URL instead of its bytes).
        self.notes: list[str] = []
        #: Failures of the test's own callbacks, reported at teardown.
        self.handler_errors: list[str] = []
        #: Bumped by every reset; a request that began before a reset records nothing after it.
        self.generation = 0
        self._request = threading.local()

    # -- stubs --------------------------------------------------------------------------
    def add_stub(self, stub: Stub, *, session: bool = False) -> None:
        with self.lock:
            (self.session_stubs if session else self.test_stubs).append(stub)
            self.files.add_recorded(stub.media)

    def add_recorded(self, stub: Stub) -> None:
        """Add a recorded session stub, replacing the one recorded earlier with the same key."""
        with self.lock:
            self.files.add_recorded(stub.media)
            stubs = self.session_stubs
            for i, old in enumerate(stubs):
                if old.recording_key is not None and old.recording_key == stub.recording_key:
                    stubs[i] = stub
                    return
            stubs.append(stub)

    def claim(
        self,
        kind: Kind,
        model: str,
        request_input: Any,
        *,
        include_session: bool = True,
        fallback: Optional[Kind] = None,
        use: bool = True,
        check: Optional[Callable[[Stub], Optional[str]]] = None,
    ) -> tuple[Optional[Stub], list[tuple[str, str]]]:
        """The first stub that serves the request (its use counted), or every reason why none does.

        Per-test stubs are tried newest first, then session stubs in order;
        ``include_session=False`` tries per-test stubs only (record mode ``all``). When no stub
        serves ``kind``, stream stubs are tried as ``fallback`` (a run that takes a stream).
        ``use=False`` counts no use (a WebSocket connection: its messages count); ``check`` is
        the caller's own last test (a reason, or None).
        """
        tried: list[tuple[Stub, str]] = []
        with self.lock:
            candidates = [*reversed(self.test_stubs), *(self.session_stubs if include_session else ())]
            for stub in candidates:
                reason = stub.reject_reason(kind, model, request_input)
                if reason is None and check is not None:
                    reason = check(stub)
                if reason is None:
                    if use:
                        stub.used += 1
                    return stub, []
                tried.append((stub, reason))
            if fallback is not None:
                for i, (stub, _) in enumerate(tried):
                    if not stub.is_stream:
                        continue
                    reason = stub.reject_reason(fallback, model, request_input)
                    if reason is None:
                        stub.used += 1
                        return stub, []
                    tried[i] = (stub, reason)
        return None, [(stub.label, reason) for stub, reason in tried]

    def clear_session_stubs(self) -> int:
        """Forget every session stub; returns how many there were."""
        with self.lock:
            count = len(self.session_stubs)
            self.session_stubs.clear()
            self.files.clear_recorded()
            return count

    # -- request generations ------------------------------------------------------------
    def begin_request(self) -> int:
        """Mark the calling thread as serving a request of the current generation."""
        generation = self._request.generation = self.generation
        return generation

    def request_generation(self) -> int:
        """The generation the calling thread's request began in (else the current one)."""
        generation: int = getattr(self._request, "generation", self.generation)
        return generation

    def is_current(self, generation: int) -> bool:
        """No reset happened since ``generation`` (work of that generation still counts)."""
        return generation == self.generation

    def _stale(self, generation: Optional[int] = None) -> bool:
        """True when the work at hand began before the last reset (call with the lock held)."""
        started = getattr(self._request, "generation", None) if generation is None else generation
        return started is not None and started != self.generation

    # -- jobs ---------------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        with self.lock:
            if self._stale():
                return
            request_id = job.request_id
            self.jobs[request_id] = job
            (self._finished if job.done else self._pending)[request_id] = None
            if job.waits_for_time:
                self.timed_jobs[request_id] = job
            while len(self.jobs) > self.max_jobs:
                self._evict_one()

    def job_finished(self, job: Job) -> None:
        """``job`` just completed (or was cancelled): the last of the finished ones to be evicted."""
        with self.lock:
            request_id = job.request_id
            if request_id in self._pending:
                del self._pending[request_id]
                self._finished[request_id] = None

    def _evict_one(self) -> None:
        queue = self._finished or self._pending
        request_id, _ = queue.popitem(last=False)
        del self.jobs[request_id]
        self.timed_jobs.pop(request_id, None)
        self._evicted[request_id] = None
        if len(self._evicted) > MAX_EVICTED:
            self._evicted.popitem(last=False)

    def job(self, request_id: str) -> Optional[Job]:
        with self.lock:
            return self.jobs.get(request_id)

    def was_evicted(self, request_id: str) -> bool:
        with self.lock:
            return request_id in self._evicted

    # -- journal, uploads, webhooks -----------------------------------------------------
    def _keep(self, items: Any, item: Any, generation: Optional[int] = None) -> None:
        """Append ``item`` to ``items`` unless the work at hand began before the last reset."""
        with self.lock:
            if not self._stale(generation):
                items.append(item)

    def record(self, request: FalRequest) -> None:
        self._keep(self.journal, request)

    def record_unmatched(self, request: UnmatchedRequest) -> None:
        with self.lock:
            if self._stale():
                return
            if len(self.unmatched) == self.max_unmatched:
                self.unmatched_dropped += 1  # the first ones are kept: they explain the failure
            else:
                self.unmatched.append(request)

    def add_file(self, entry: FileEntry) -> None:
        """Serve ``entry`` until the next reset (unless the request began before the last one)."""
        with self.lock:
            stale = self._stale()
            if not stale:
                self.files.put(entry)
        if stale:
            entry.blob.close()

    def issue_upload(self, key: FileKey, content_type: str) -> None:
        """Remember an upload URL handed out (unless the request began before the last reset)."""
        with self.lock:
            if not self._stale():
                self.files.issue(key, content_type)

    def add_notes(self, notes: Iterable[str]) -> None:
        with self.lock:
            if not self._stale():
                self.notes.extend(notes)

    def take_notes(self) -> list[str]:
        """The warnings noted so far (each is handed out once)."""
        with self.lock:
            notes, self.notes = self.notes, []
        return notes

    def add_handler_error(self, text: str) -> None:
        """A test's callback (a realtime reply, a WebSocket handler) raised or answered nonsense."""
        self._keep(self.handler_errors, text)

    def add_webhook(self, delivery: WebhookDelivery, generation: Optional[int] = None) -> None:
        """Record a webhook outcome; ``generation`` is the one the job completed in."""
        self._keep(self.webhooks, delivery, generation)

    def snapshot(self, items: Iterable[Any]) -> list[Any]:
        with self.lock:
            return list(items)

    # -- reset --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything a test did; session stubs stay (their use counts restart)."""
        with self.lock:
            self.generation += 1
            self.test_stubs.clear()
            for stub in self.session_stubs:
                stub.used = 0
            self.jobs.clear()
            self._pending.clear()
            self._finished.clear()
            self._evicted.clear()
            self.timed_jobs.clear()
            self.journal.clear()
            self.unmatched.clear()
            self.unmatched_dropped = 0
            self.files.reset()
            self.webhooks.clear()
            self.notes.clear()
            self.handler_errors.clear()
