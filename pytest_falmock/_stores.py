"""State behind one lock: stubs, jobs, files, the journal. Reset is one call. State only."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Iterable, Optional

from ._files import FileEntry, FileStore
from ._jobs import Job
from ._journal import FalRequest, UnmatchedRequest, WebhookDelivery
from ._settings import DEFAULT_MAX_JOBS
from ._stubs import Kind, Stub

DEFAULT_MAX_JOURNAL = 50_000


class Stores:
    """Everything the engine remembers. All access goes through ``lock``."""

    def __init__(self, max_jobs: int = DEFAULT_MAX_JOBS, max_journal: int = DEFAULT_MAX_JOURNAL) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.lock = threading.RLock()
        self.max_jobs = max_jobs
        #: Stubs that live for the whole session (files, control API, recordings), in order.
        self.session_stubs: list[Stub] = []
        #: Per-test stubs, oldest first (matched newest first).
        self.test_stubs: list[Stub] = []
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        #: Pending jobs with a latency still to run (completed by the clock, see ``Engine.tick``).
        self.timed_jobs: dict[str, Job] = {}
        self.journal: Deque[FalRequest] = deque(maxlen=max_journal)
        self.unmatched: list[UnmatchedRequest] = []
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
            self.jobs[job.request_id] = job
            if job.waits_for_time:
                self.timed_jobs[job.request_id] = job
            while len(self.jobs) > self.max_jobs:
                self._evict_one()

    def _evict_one(self) -> None:
        for request_id, job in self.jobs.items():
            if job.done:
                del self.jobs[request_id]
                return
        request_id, _ = self.jobs.popitem(last=False)
        self.timed_jobs.pop(request_id, None)

    def job(self, request_id: str) -> Optional[Job]:
        with self.lock:
            return self.jobs.get(request_id)

    # -- journal, uploads, webhooks -----------------------------------------------------
    def _keep(self, items: Any, item: Any, generation: Optional[int] = None) -> None:
        """Append ``item`` to ``items`` unless the work at hand began before the last reset."""
        with self.lock:
            if not self._stale(generation):
                items.append(item)

    def record(self, request: FalRequest) -> None:
        self._keep(self.journal, request)

    def record_unmatched(self, request: UnmatchedRequest) -> None:
        self._keep(self.unmatched, request)

    def add_file(self, entry: FileEntry) -> None:
        """Serve ``entry`` until the next reset (unless the request began before the last one)."""
        with self.lock:
            stale = self._stale()
            if not stale:
                self.files.put(entry)
        if stale:
            entry.blob.close()

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
            self.timed_jobs.clear()
            self.journal.clear()
            self.unmatched.clear()
            self.files.reset()
            self.webhooks.clear()
            self.notes.clear()
            self.handler_errors.clear()
