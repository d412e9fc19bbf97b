"""``FalMock``: the public face of the mock, used by the fixture, the CLI and on its own."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Sequence, Type, Union

from ._blob import BytesBlob
from ._clients._startup import child_environment
from ._clock import Clock, check_seconds
from ._control import Control
from ._diagnostics import calls_message, handler_errors_message, unmatched_message
from ._engine import Engine, RequestListener, Upstream
from ._errors import FalMockUsageError, FalMockWarning
from ._files import FileEntry, StoreFull, new_file_id, safe_name
from ._fixture_files import load_path, parse_document
from ._jobs import QueueConfig
from ._journal import FalRequest, ServedFile, UnmatchedRequest, Upload, WebhookDelivery
from ._net import exposure_warning
from ._operation import JournalRoute
from ._registering import ModelArg, Registering
from ._server import FalMockServer
from ._settings import Settings, marker_overrides, queue_config
from ._signing import WebhookSigner
from ._stores import Stores
from ._stubs import Stub, describe_model, model_spec
from ._urls import file_url, jwks_url, proxy_url
from ._webhooks import WebhookSender

#: Requests ``assert_called`` counts: the ones that ask a model for something.
COUNTED_ROUTES: frozenset[JournalRoute] = frozenset({"queue.submit", "run", "run.stream", "realtime.message"})


class FalMock(Registering):
    """A local stand-in for fal.ai, served over HTTP on 127.0.0.1.

    Use it through the ``fal_mock`` pytest fixture, or on its own::

        with FalMock() as mock:
            mock.on_queue("fal-ai/flux/dev", {"images": [{"url": "https://x/cat.png"}]})
            ...  # point a client at mock.url

    ``settings`` are the session defaults (keywords given here override them);
    :meth:`configure` changes them for one test and :meth:`reset` restores them. ``upstream``
    answers what no stub serves (record mode, see ``_record.py``). Time-based behaviour reads
    the mock's :attr:`clock`, which :meth:`advance` moves forward.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        settings: Optional[Settings] = None,
        upstream: Optional[Upstream] = None,
        allow_remote_webhooks: Optional[bool] = None,
        max_jobs: Optional[int] = None,
        max_body: Optional[int] = None,
        virtual_time: Optional[bool] = None,
        allow_hosts: Optional[Sequence[str]] = None,
    ) -> None:
        if not isinstance(host, str) or not host.strip():
            raise ValueError(
                f"FalMock(host={host!r}): name the interface to bind, e.g. 127.0.0.1 "
                "(an empty host would bind every interface)"
            )
        given: dict[str, Any] = {
            "allow_remote_webhooks": allow_remote_webhooks,
            "max_jobs": max_jobs,
            "max_body": max_body,
            "virtual_time": virtual_time,
            "allow_hosts": tuple(allow_hosts) if allow_hosts is not None else None,
        }
        defaults = settings if settings is not None else Settings()
        self._defaults = dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})
        self._settings = self._defaults
        defaults = self._defaults
        self._stores = Stores(
            max_jobs=defaults.max_jobs,
            max_unmatched=defaults.max_unmatched,
            max_journal_bytes=defaults.max_journal_bytes,
            max_files=defaults.max_files,
            max_file_bytes=defaults.max_file_bytes,
        )
        signer = WebhookSigner()  # one key per mock, made on first use
        self._clock = Clock()
        self._engine = Engine(self._stores, self._current_settings, self._clock, upstream, signer)
        self._webhooks = WebhookSender(self._stores, self._current_settings, signer)
        self._engine.completion_listeners.append(self._webhooks.job_completed)
        handlers = {route: self._engine.handle for route in self._engine.routes}
        handlers.update(Control(self).handlers)
        self._server = FalMockServer(
            handlers,
            self._engine.record_rejected,
            host,
            port,
            max_body=self._defaults.max_body,
            max_input=self._defaults.max_input,
            limits=self._defaults.connection_limits,
            allow_hosts=self._defaults.allow_hosts,
        )

    def _current_settings(self) -> Settings:
        return self._settings

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FalMock:
        """Start serving (idempotent); returns ``self``.

        Binding an address other than a loopback one warns (``FalMockWarning``): the mock is then
        reachable from other machines.
        """
        if not self._server.is_running():
            self._server.start()
            risk = exposure_warning(self._server.host, self.port)
            if risk:
                warnings.warn(FalMockWarning(risk), stacklevel=2)
        return self

    def stop(self) -> None:
        """Stop serving, wait for pending webhook deliveries and delete the temporary files of
        uploads (idempotent)."""
        if self._server.is_running():
            self._server.stop()
        self._webhooks.drain()
        self._stores.files.reset()

    def __enter__(self) -> FalMock:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self._server.is_running()

    @property
    def base_url(self) -> str:
        """The server root, ``http://127.0.0.1:<port>``."""
        return self._server.base_url

    @property
    def url(self) -> str:
        """The proxy base, ``http://127.0.0.1:<port>/fal`` (``withProxy({targetUrl})``)."""
        return proxy_url(self.base_url)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def webhook_jwks_url(self) -> str:
        """The JWKS this mock's webhook signatures verify against - point the app's verifier here
        instead of ``https://rest.fal.ai/.well-known/jwks.json``."""
        return jwks_url(self.base_url)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that send a child process's fal calls to this mock:
        ``FAL_MOCK_URL``, a dummy ``FAL_KEY`` and ``NO_PROXY`` (use with
        ``env={**os.environ, **fal_mock.env}``; needs pytest-falmock in the child's environment)."""
        return child_environment(self.url)

    def __repr__(self) -> str:
        state = self.url if self.is_running() else "stopped"
        return f"<FalMock {state}>"

    # -- settings -----------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The settings in force now: the session defaults plus this test's overrides."""
        return self._settings

    def configure(self, **changes: Any) -> None:
        """Override settings until the next :meth:`reset`: the ``@pytest.mark.fal_mock`` keywords,
        ``queue=`` (a ``QueueConfig``) and ``test_stubs=`` (the fixture opens each test with it)."""
        queue = changes.pop("queue", None)
        test_stubs = changes.pop("test_stubs", None)
        overrides = marker_overrides("fal_mock.configure()", (), changes)
        if queue is not None:
            if not isinstance(queue, QueueConfig):
                raise TypeError(f"fal_mock.configure(): queue must be a QueueConfig, got {queue!r}")
            overrides["queue"] = queue
        if test_stubs is not None:
            if not isinstance(test_stubs, bool):
                raise TypeError(f"fal_mock.configure(): test_stubs must be True or False, got {test_stubs!r}")
            overrides["test_stubs"] = test_stubs
        self._settings = self._settings.override(**overrides)

    # -- time ---------------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        """The mock's clock (documented-internal): wall time plus the virtual offset that the
        patched clients' waits, run latency under virtual time and :meth:`advance` add to."""
        return self._clock

    def advance(self, seconds: float) -> None:
        """Move the mock's clock ``seconds`` forward: jobs' latency runs down, and a job left
        waiting only for time completes (its webhook fires). For apps that wait with their own
        sleeps, JS clients and the standalone server (``POST /__falmock/advance``)."""
        self._clock.advance(check_seconds(seconds, "fal_mock.advance()", self._clock))

    def queue(self, **kwargs: Any) -> None:
        """Set polling realism for jobs submitted from now on (same keywords as ``fal_queue``)."""
        self.configure(queue=queue_config("fal_mock.queue()", (), **kwargs))

    def reset(self) -> None:
        """Forget per-test stubs, jobs, the journal, uploads, added files and webhooks; keep
        session stubs (and their recorded media); restore the session settings; put the clock
        back on the wall clock.

        Work still under way for the previous test (a slow request, a webhook delivery) records
        nothing once the reset is done; its open WebSocket connections are closed (1001).
        """
        self._server.close_websockets()
        self._stores.reset()
        self._clock.reset()  # the next test starts on the wall clock, not where this one left it
        self._settings = self._defaults
        self._server.clear_internal_errors()

    def load_fixtures(self, path: Union[str, Path]) -> int:
        """Load a fixture file (or a directory of ``*.json``) for the whole session."""
        return self.add_session_stubs(load_path(Path(path)))

    def add_fixture_document(self, document: Any, source: str = "fixtures") -> int:
        """Add session stubs from an already-parsed ``{"fixtures": [...]}`` document."""
        return self.add_session_stubs(parse_document(document, source))

    def clear_session_stubs(self) -> int:
        """Forget every session stub (fixture files, the control API, recordings); returns how
        many there were. Per-test stubs stay until :meth:`reset`."""
        return self._stores.clear_session_stubs()

    def add_session_stubs(self, stubs: Sequence[Stub]) -> int:
        """Register already-parsed stubs for the whole session (documented-internal: the plugin
        and the CLI parse fixture files up front, to report a bad file before serving)."""
        for stub in stubs:
            self._stores.add_stub(stub, session=True)
        return len(stubs)

    # -- files --------------------------------------------------------------------------
    def add_file(self, data: bytes, content_type: str, file_name: Optional[str] = None) -> str:
        """Serve ``data`` as ``content_type`` until the test ends; returns its URL on the mock.

        Use it for a real sample (a photo, a clip) that a stub's response should point at.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"fal_mock.add_file(): data must be bytes, got {type(data).__name__}")
        if not isinstance(content_type, str) or not content_type.strip():
            raise TypeError(
                "fal_mock.add_file(): content_type must be a media type such as 'image/png', "
                f"got {content_type!r}"
            )
        if file_name is not None and not isinstance(file_name, str):
            raise TypeError(f"fal_mock.add_file(): file_name must be a str or None, got {file_name!r}")
        if not self.is_running():
            raise RuntimeError("fal_mock.add_file(): start the mock first (the URL names its port)")
        key = (new_file_id(), safe_name(file_name or "", content_type))
        url = file_url(self.base_url, *key)
        try:
            self._stores.add_file(FileEntry(key, BytesBlob(bytes(data)), content_type.strip(), "added", url))
        except StoreFull as exc:
            raise FalMockUsageError(f"fal_mock.add_file(): {exc}") from None
        return url

    @property
    def files(self) -> list[ServedFile]:
        """Every file the mock serves now: recorded media, then this test's uploads, added files
        and the generated media downloaded so far."""
        return [
            ServedFile(
                entry.url or file_url(self.base_url, *entry.key),
                entry.file_name,
                entry.content_type,
                entry.blob,
                entry.source,
            )
            for entry in self._stores.files.entries()
        ]

    def take_warnings(self) -> list[str]:
        """Warnings noted since the last call (documented-internal: e.g. a recording that kept a
        media URL it could not download); the plugin reports them as ``FalMockWarning``."""
        return self._stores.take_notes()

    # -- inspecting ---------------------------------------------------------------------
    def add_request_listener(self, listener: RequestListener) -> None:
        """Call ``listener(request, unmatched)`` after each fal request is journaled (control
        API calls excluded), on the thread serving it; ``unmatched`` is the
        :class:`UnmatchedRequest` with each stub's reason when nothing matched, else None.
        The standalone server logs through it."""
        self._engine.request_listeners.append(listener)

    @property
    def requests(self) -> list[FalRequest]:
        """The journal: every request the mock received since the last reset, in order."""
        return self._stores.snapshot(self._stores.journal)

    @property
    def uploads(self) -> list[Upload]:
        """Files uploaded in this test, in order (a multipart upload once, when completed)."""
        return [
            Upload(entry.url or "", entry.file_name, entry.content_type, entry.blob, entry.via)
            for entry in self._stores.files.entries()
            if entry.source == "upload"
        ]

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        self._webhooks.drain()
        return self._stores.snapshot(self._stores.webhooks)

    @property
    def unmatched(self) -> list[UnmatchedRequest]:
        return self._stores.snapshot(self._stores.unmatched)

    def assert_called(self, model: ModelArg, times: Optional[int] = None) -> None:
        """Assert submits, runs, streams or realtime messages for ``model`` were made (exactly
        ``times`` if given)."""
        __tracebackhide__ = True
        spec = model_spec(model, "fal_mock.assert_called()")

        def hit(request: FalRequest) -> bool:
            if request.model is None:
                return False
            if isinstance(spec, str):
                return request.model == spec
            return spec.search(request.model) is not None

        made = [r for r in self.requests if r.route in COUNTED_ROUTES]
        calls = [r for r in made if hit(r)]
        if (times is None and calls) or (times is not None and len(calls) == times):
            return
        others = [r for r in made if not hit(r)]
        shown = describe_model(spec) + (f", times={times}" if times is not None else "")
        raise AssertionError(calls_message(shown, times, calls, others))

    def check(self) -> None:
        """Raise ``AssertionError`` if a request matched no stub (unless the settings allow it)
        or the server hit a bug."""
        __tracebackhide__ = True
        problems = self.problems()
        if problems:
            raise AssertionError(problems)

    def blocked_webhooks(self) -> list[WebhookDelivery]:
        """Webhooks refused because their URL is not loopback (recorded at once: no waiting)."""
        return [d for d in self._stores.snapshot(self._stores.webhooks) if d.outcome == "blocked"]

    def problems(self, *, allow_unmatched: Optional[bool] = None) -> str:
        """The teardown report: unmatched requests (unless allowed, by default per the
        settings) and internal errors."""
        if allow_unmatched is None:
            allow_unmatched = self._settings.allow_unmatched
        parts = []
        unmatched = self.unmatched
        if unmatched and not allow_unmatched:
            parts.append(unmatched_message(unmatched, self._stores.unmatched_dropped))
        failed = self._stores.snapshot(self._stores.handler_errors)
        if failed:
            parts.append(handler_errors_message(failed, self._stores.handler_errors_dropped))
        errors = list(self._server.internal_errors)
        if errors:
            more = self._server.internal_errors_dropped
            parts.append(
                "fal_mock: the mock server hit an internal error (please report it):\n"
                + "\n".join(errors)
                + (f"\n... and {more} more, not kept" if more else "")
            )
        return "\n\n".join(parts)
