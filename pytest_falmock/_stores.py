"""State behind one lock: stubs, jobs, files, the journal. Reset is one call. State only."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Iterable, Optional

from ._files import FileEntry, FileKey, FileStore, StoreFull
from ._jobs import Job
from ._journal import FalRequest, UnmatchedRequest, WebhookDelivery
from ._settings import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_JOBS,
    DEFAULT_MAX_JOURNAL_BYTES,
    DEFAULT_MAX_UNMATCHED,
)
from ._stubs import Kind, Stub

DEFAULT_MAX_JOURNAL = 50_000
#: Evicted job ids remembered, so polling one says why it is gone.
MAX_EVICTED = 1_000
#: Webhook outcomes kept (the oldest go first).
MAX_WEBHOOKS = 10_000
#: Failures of a test's own callbacks kept for the teardown report (the rest are counted).
MAX_HANDLER_ERRORS = 100
#: What one reason of an unmatched record costs besides its text (the tuple, the string object).
REASON_OVERHEAD = 100


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
        *,
        max_journal_bytes: int = DEFAULT_MAX_JOURNAL_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
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
        #: What each journal record holds (its ``cost``), in step with ``journal``, and in all.
        self._journal_costs: Deque[int] = deque()
        self._journal_bytes = 0
        self.max_journal_bytes = max_journal_bytes
        self.unmatched: Deque[UnmatchedRequest] = deque(maxlen=max_unmatched)
        self._unmatched_bytes = 0
        #: Unmatched requests not kept because ``unmatched`` was full.
        self.unmatched_dropped = 0
        #: Uploads, added, generated and recorded files (shares ``lock``).
        self.files = FileStore(self.lock, max_files, max_file_bytes)
        #: Webhook outcomes, the newest :data:`MAX_WEBHOOKS` (older ones go).
        self.webhooks: Deque[WebhookDelivery] = deque(maxlen=MAX_WEBHOOKS)
        #: Warnings for the test (e.g. a recording that kept a media URL instead of its bytes).
        self.notes: list[str] = []
        #: Failures of the test's own callbacks, reported at teardown (the first ones; the
        #: rest are counted in ``handler_errors_dropped``).
        self.handler_errors: list[str] = []
        self.handler_errors_dropped = 0
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

    def hands_out(self, generated: tuple[str, str]) -> bool:
        """Whether a registered stub's answers point at the generated file ``(spec, name)``."""
        with self.lock:
            return any(generated in stub.generated for stub in (*self.test_stubs, *self.session_stubs))

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

    def record(self, request: FalRequest, cost: int = 0) -> None:
        """Journal ``request``, which holds about ``cost`` bytes: past ``max_journal_bytes`` in
        all (or the count bound), the oldest records go."""
        with self.lock:
            if self._stale():
                return
            journal, costs = self.journal, self._journal_costs
            if len(journal) == journal.maxlen:
                journal.popleft()
                self._journal_bytes -= costs.popleft()
            journal.append(request)
            costs.append(cost)
            self._journal_bytes += cost
            while self._journal_bytes > self.max_journal_bytes and len(journal) > 1:
                journal.popleft()
                self._journal_bytes -= costs.popleft()

    def record_unmatched(self, request: UnmatchedRequest, input_cost: int = 0) -> None:
        """Keep ``request`` for the teardown report unless ``max_unmatched`` records or
        ``max_journal_bytes`` (its input's ``input_cost`` and its reasons) are held already: the
        first ones are kept (they explain the failure), later ones counted."""
        cost = input_cost + sum(len(reason) + REASON_OVERHEAD for _, reason in request.reasons)
        with self.lock:
            if self._stale():
                return
            full = len(self.unmatched) == self.max_unmatched
            if full or (self.unmatched and self._unmatched_bytes + cost > self.max_journal_bytes):
                self.unmatched_dropped += 1
            else:
                self.unmatched.append(request)
                self._unmatched_bytes += cost

    def add_file(self, entry: FileEntry) -> None:
        """Serve ``entry`` until the next reset (unless the request began before the last one);
        :class:`StoreFull` (the entry dropped) past the file bounds."""
        entry.blob = self.files.spill(entry.blob)  # before the lock: it may write to disk
        stale = False
        try:
            with self.lock:
                stale = self._stale()
                if not stale:
                    self.files.put(entry)
        except StoreFull:
            entry.blob.close()
            raise
        if stale:
            entry.blob.close()

    def begin_multipart(self, key: FileKey, url: str, content_type: str) -> Optional[str]:
        """Start a multipart upload (its id; None when the request began before the last
        reset); :class:`StoreFull` past the file bounds."""
        with self.lock:
            if self._stale():
                return None
            return self.files.begin_multipart(key, url, content_type)

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
        with self.lock:
            if self._stale():
                return
            if len(self.handler_errors) < MAX_HANDLER_ERRORS:
                self.handler_errors.append(text)
            else:
                self.handler_errors_dropped += 1

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
            self._journal_costs.clear()
            self._journal_bytes = 0
            self.unmatched.clear()
            self._unmatched_bytes = 0
            self.unmatched_dropped = 0
            self.files.reset()
            self.webhooks.clear()
            self.notes.clear()
            self.handler_errors.clear()
            self.handler_errors_dropped = 0
