"""The engine: acts on an :class:`Operation` - matches stubs, runs jobs, renders fal's shapes.

It knows nothing of sockets or pytest. The tables of ``docs/wire.md`` (queue lifecycle,
polling realism) are implemented here, in the same order.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from typing import Any, Callable, Iterator, Optional, Protocol, Union

from . import _realtime as realtime
from ._blob import Blob
from ._clock import Clock
from ._constants import (
    CANCELLED_ERROR_TYPE,
    ERROR_TYPE_HEADER,
    REQUEST_ID_HEADER,
    REQUEST_TIMEOUT_ERROR_TYPE,
    REQUEST_TIMEOUT_MESSAGE,
    REQUEST_TIMEOUT_TYPE_HEADER,
)
from ._headers import Headers, accepts_event_stream
from ._jobs import Job
from ._journal import FalRequest, UnmatchedRequest
from ._operation import Operation, Route, RouteError
from ._reply import Reply, detail
from ._secrets import redact_query
from ._settings import Settings
from ._storage import Storage
from ._stores import Stores
from ._stubs import Kind, RenderContext, Stub
from ._webhooks import page_refusal

#: Seconds a streamed status waits between polls while a job's latency runs (real time; under
#: virtual time the stream moves the clock to the job's completion instead).
STREAM_POLL_INTERVAL = 0.05
#: What a request whose start timeout ran out answers (a run at once, a queue job's result).
TIMEOUT_STATUS = 504
TIMEOUT_BODY: dict[str, Any] = {"detail": REQUEST_TIMEOUT_MESSAGE, "error_type": REQUEST_TIMEOUT_ERROR_TYPE}
TIMEOUT_HEADERS = {REQUEST_TIMEOUT_TYPE_HEADER: "user"}

CompletionListener = Callable[[Job], None]
#: Told of every journaled request, with the reasons when no stub matched it.
RequestListener = Callable[[FalRequest, Optional[UnmatchedRequest]], None]
Handler = Callable[[Operation], Reply]


class JwksSource(Protocol):
    """Where the webhook signing keys come from (``_signing.WebhookSigner``)."""

    def jwks(self) -> dict[str, Any]: ...


class Upstream(Protocol):
    """Where an unmatched request goes when recording (``_record.py``); the engine only asks.

    ``forward`` answers with the stub it recorded (the engine registers it for the session,
    replacing an earlier recording with the same ``recording_key``) or with the reply the
    client gets instead (e.g. 502). With ``forward_all`` only per-test stubs are tried before
    the upstream.
    """

    @property
    def forward_all(self) -> bool: ...

    def forward(self, op: Operation, kind: Kind) -> Union[Stub, Reply]: ...


def new_request_id() -> str:
    """A random (version 4) UUID string, like ``str(uuid.uuid4())`` at under half the cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _EarlyReply(Exception):
    """Ends a request early with ``reply`` (unknown id, no matching stub, upstream failure)."""

    def __init__(self, reply: Reply, unmatched: Optional[UnmatchedRequest] = None) -> None:
        super().__init__(reply.status)
        self.reply = reply
        self.unmatched = unmatched


class Engine:
    """Answers every fal route; ``settings`` returns the mock's settings of the moment, ``clock``
    is the mock's clock (every advance completes the jobs whose latency has run, see :meth:`tick`)."""

    def __init__(
        self,
        stores: Stores,
        settings: Callable[[], Settings],
        clock: Clock,
        upstream: Optional[Upstream] = None,
        signer: Optional[JwksSource] = None,
    ) -> None:
        self.stores = stores
        self.settings = settings
        self.clock = clock
        clock.listen(self.tick)
        self.signer = signer
        #: Called (outside the lock) with every job that reaches COMPLETED.
        self.completion_listeners: list[CompletionListener] = []
        #: Called on the serving thread after each request is journaled.
        self.request_listeners: list[RequestListener] = []
        #: Consulted for queue submits and runs no stub serves (record mode); None = never.
        self.upstream = upstream
        self._handlers: dict[Route, Handler] = {
            "queue.submit": self._submit,
            "queue.status": self._status,
            "queue.status_stream": self._status_stream,
            "queue.result": self._result,
            "queue.cancel": self._cancel,
            "run": self._run,
            "run.stream": self._stream,
            "realtime.token": self._realtime_token,
            "realtime.connect": self._realtime_connect,
            "webhook.jwks": self._jwks,
            **Storage(stores).handlers,
        }

    @property
    def routes(self) -> frozenset[Route]:
        """The routes :meth:`handle` answers."""
        return frozenset(self._handlers)

    # -- entry points -------------------------------------------------------------------
    def handle(self, op: Operation) -> Reply:
        """Answer ``op`` and journal it."""
        self.stores.begin_request()  # what a request started before a reset does is dropped
        unmatched = None
        try:
            reply = self._handlers[op.route](op)
        except _EarlyReply as early:
            reply, unmatched = early.reply, early.unmatched
        request_id = op.request_id or reply.headers.get(REQUEST_ID_HEADER)
        journal_body = self.settings().journal_body
        self._journal(
            FalRequest(
                method=op.method,
                path=op.path,
                route=op.route,
                model=reply.model or op.model,
                request_id=request_id,
                input=op.input,
                query=redact_query(op.query),
                headers=op.headers.redacted(),
                status_code=reply.status,
                body=op.body.head(journal_body),  # a bounded prefix; input stays whole
            ),
            unmatched,
            op.input_cost,
        )
        return reply

    def _journal(
        self, request: FalRequest, unmatched: Optional[UnmatchedRequest] = None, input_cost: int = 0
    ) -> None:
        """Journal ``request`` (body cut to ``journal_body``); it counts against ``max_journal_bytes``."""
        limit = self.settings().journal_body
        if len(request.body) > limit:  # a realtime message: its bytes came whole
            request = dataclasses.replace(request, body=request.body[:limit])
        self.stores.record(request, 2 * request.headers.wire_size + len(request.body) + input_cost)
        for listener in self.request_listeners:
            listener(request, unmatched)

    def record_rejected(
        self, method: str, path: str, query: dict[str, str], headers: Headers, error: RouteError, body: Blob
    ) -> None:
        """Journal a request routing refused (it is answered ``error.status``)."""
        self.stores.begin_request()
        self._journal(
            FalRequest(
                method=method,
                path=path,
                route=error.route,
                model=error.model,
                request_id=None,
                input=None,
                query=redact_query(query),
                headers=headers.redacted(),
                status_code=error.status,
                body=body.head(self.settings().journal_body),
            )
        )

    # -- matching -----------------------------------------------------------------------
    def _claim(self, op: Operation, kind: Kind, fallback: Optional[Kind] = None) -> Stub:
        """The stub serving ``op`` (as ``kind``, else as ``fallback``); otherwise ends the request
        with the upstream's or a 404 answer."""
        assert op.model is not None
        upstream = self.upstream if kind != "stream" else None
        forward_all = upstream is not None and upstream.forward_all
        stub, reasons = self.stores.claim(
            kind, op.model, op.input, include_session=not forward_all, fallback=fallback
        )
        if stub is not None:
            return stub
        if upstream is not None:
            outcome = upstream.forward(op, kind)
            if isinstance(outcome, Reply):
                raise _EarlyReply(outcome)
            self.stores.add_recorded(outcome)
            self.stores.add_notes(outcome.notes)
            return outcome
        unmatched = UnmatchedRequest(op.method, op.path, op.route, op.model, op.input, tuple(reasons))
        self.stores.record_unmatched(unmatched, op.input_cost)
        message = f"fal_mock: no fixture matches model {op.model!r} ({kind} request)"
        raise _EarlyReply(
            Reply(404, {"detail": message, "error_type": "no_fixture_match", "model": op.model}), unmatched
        )

    def _completed(self, job: Job) -> None:
        self.stores.job_finished(job)  # evicted before pending ones from now on
        for listener in self.completion_listeners:
            listener(job)

    # -- time ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Complete the pending jobs whose latency has run and whose polls are done (their
        webhooks fire); called after every advance of the clock."""
        with self.stores.lock:
            timed = self.stores.timed_jobs
            if not timed:
                return
            completed = [job for job in timed.values() if job.complete_if_due()]
            for request_id in [key for key, job in timed.items() if not job.waits_for_time]:
                del timed[request_id]
        for job in completed:
            self._completed(job)

    def _wait(self, seconds: float) -> None:
        """Every wait the engine makes (a stub's latency, a start timeout): under virtual time
        the clock moves on, otherwise the thread sleeps."""
        if seconds <= 0:
            return
        if self.settings().virtual_time:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    # -- queue --------------------------------------------------------------------------
    def _submit(self, op: Operation) -> Reply:
        stub = self._claim(op, "queue")
        assert op.model is not None
        request_id = new_request_id()
        status, error_type, headers = stub.status, stub.error_type, dict(stub.headers)
        latency = stub.latency
        if op.start_timeout is not None and latency > op.start_timeout:
            # the job ends with fal's 504 once the start timeout runs out
            status, error_type, headers = TIMEOUT_STATUS, REQUEST_TIMEOUT_ERROR_TYPE, dict(TIMEOUT_HEADERS)
            latency, body = op.start_timeout, dict(TIMEOUT_BODY)
        else:
            body = stub.render(op.input, RenderContext(op.base_url))
        job = Job(
            request_id=request_id,
            model=op.model,
            config=self.settings().queue,
            base_url=op.base_url,
            result_status=status,
            result_body=body,
            clock=self.clock,
            error_type=error_type,
            result_headers=headers,
            latency=latency,
            webhook_url=op.query.get("fal_webhook") or None,
            webhook_refused=page_refusal(op.headers) if "fal_webhook" in op.query else None,
        )
        self.stores.add_job(job)
        if job.done:
            self._completed(job)
        url = job.url
        envelope = {
            "request_id": request_id,
            "status_url": url + "/status",
            "response_url": url,
            "cancel_url": url + "/cancel",
            "queue_position": job.config.in_progress,
            "status": "IN_QUEUE",
        }
        return Reply(200, envelope, {REQUEST_ID_HEADER: request_id})

    def _job(self, op: Operation) -> Job:
        """The job ``op`` names; an unknown id ends the request with 404."""
        assert op.request_id is not None
        job = self.stores.job(op.request_id)
        if job is None:
            message = f"Request {op.request_id} not found"
            if self.stores.was_evicted(op.request_id):
                message += (
                    f": evicted, the mock keeps at most {self.stores.max_jobs} jobs "
                    "(finished ones go first; raise FalMock(max_jobs=...))"
                )
            raise _EarlyReply(detail(404, message))
        return job

    def _poll(self, job: Job) -> tuple[int, dict[str, Any]]:
        with self.stores.lock:
            just_completed = job.poll()
            body = job.status_body()
        if just_completed:
            self._completed(job)
        return (200 if job.done else 202), body

    def _status(self, op: Operation) -> Reply:
        job = self._job(op)
        if op.method == "HEAD":  # a HEAD is no poll: the job stays where it is
            with self.stores.lock:
                status, body = (200 if job.done else 202), job.status_body()
        else:
            status, body = self._poll(job)
        return Reply(status, body, {REQUEST_ID_HEADER: job.request_id})

    def _status_stream(self, op: Operation) -> Reply:
        job = self._job(op)

        def events() -> Iterator[Any]:
            sent = 0  # each event carries only the log entries this stream has not sent yet
            while True:
                _, body = self._poll(job)
                logs = body.get("logs") or []
                body["logs"], sent = logs[sent:], len(logs)
                yield body
                if job.done:
                    return
                if job.polls >= job.config.completed:  # only latency holds it back
                    left = job.time_left()
                    self._wait(left if self.settings().virtual_time else min(left, STREAM_POLL_INTERVAL))

        return Reply(200, None, {REQUEST_ID_HEADER: job.request_id}, events=events())

    def _result(self, op: Operation) -> Reply:
        job = self._job(op)
        headers = {REQUEST_ID_HEADER: job.request_id}
        with self.stores.lock:
            if not job.done:
                return Reply(202, job.status_body(), headers)
        if job.cancelled:
            headers[ERROR_TYPE_HEADER] = CANCELLED_ERROR_TYPE
            return Reply(400, {"detail": job.error, "error_type": CANCELLED_ERROR_TYPE}, headers)
        if job.result_status >= 400 and job.error_type:
            headers[ERROR_TYPE_HEADER] = job.error_type
        headers.update(job.result_headers)
        return Reply(job.result_status, job.result_body, headers)

    def _cancel(self, op: Operation) -> Reply:
        job = self._job(op)
        with self.stores.lock:
            cancelled = job.cancel()
        if not cancelled:
            return Reply(400, {"status": "ALREADY_COMPLETED"})
        self._completed(job)
        return Reply(200, {"status": "CANCELLED"})

    # -- synchronous runs ---------------------------------------------------------------
    def _run(self, op: Operation) -> Reply:
        # A run that takes any answer type (fal.apps.stream) may be served by a stream fixture.
        _, takes_stream = accepts_event_stream(op.headers)
        return self._serve(self._claim(op, "run", "stream" if takes_stream else None), op)

    def _stream(self, op: Operation) -> Reply:
        return self._serve(self._claim(op, "stream"), op)

    def _serve(self, stub: Stub, op: Operation) -> Reply:
        """A run's answer, after the stub's latency - or fal's 504 once the start timeout runs out."""
        headers = {REQUEST_ID_HEADER: new_request_id()}
        if op.start_timeout is not None and stub.latency > op.start_timeout:
            self._wait(op.start_timeout)
            headers[ERROR_TYPE_HEADER] = REQUEST_TIMEOUT_ERROR_TYPE
            return Reply(TIMEOUT_STATUS, dict(TIMEOUT_BODY), {**headers, **TIMEOUT_HEADERS})
        self._wait(stub.latency)
        headers.update(stub.headers)
        if stub.events is not None:
            return Reply(200, None, headers, events=iter(list(stub.events)))
        # an on_error() stub serves streams too: the stream answers the error, like a run
        if stub.status >= 400 and stub.error_type:
            headers[ERROR_TYPE_HEADER] = stub.error_type
        return Reply(stub.status, stub.render(op.input, RenderContext(op.base_url)), headers)

    # -- the rest ---------------------------------------------------------------------
    def _jwks(self, op: Operation) -> Reply:
        """``GET https://rest.fal.ai/.well-known/jwks.json``: the keys webhooks are signed with."""
        if self.signer is None:
            return detail(404, "this mock signs no webhooks")
        return Reply(200, self.signer.jwks())

    # -- realtime -----------------------------------------------------------------------
    def _realtime_token(self, op: Operation) -> Reply:
        """A short-lived token for the realtime WebSocket: fal answers a bare JSON string."""
        return Reply(200, f"falmock-rt-{secrets.token_urlsafe(24)}")

    def _realtime_connect(self, op: Operation) -> Reply:
        """A WebSocket connection: accepted (101), its messages journaled like requests."""
        reply, unmatched = realtime.connect(self.stores, op, new_request_id(), self._journal)
        if unmatched is not None:  # open, told why, closed: journaled as unmatched
            raise _EarlyReply(reply, unmatched)
        return reply
