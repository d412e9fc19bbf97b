"""Point the real Python ``fal_client`` at the mock - the only module that knows its internals.

Recipe (verified against fal-client 0.5 - 1.0.3): patch the URL constants of
``fal_client.client`` (read at call time), set a dummy ``FAL_KEY``, let 127.0.0.1 bypass HTTP
proxies, and drop the cached ``_auth``/``_client``/``_token_manager`` of the module-level
clients so they are rebuilt against the patched URLs. Given the mock's clock, the module's
waits become virtual too (``_virtual_time.py``).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from importlib import metadata
from types import ModuleType
from typing import Any, Callable, Optional

from ._clock import Clock
from ._constants import DUMMY_FAL_KEY
from ._urls import service_url, websocket_url
from ._virtual_time import VirtualTime, missing_waits

CACHED = ("_auth", "_client", "_token_manager")
#: What the module-level sync client keeps from one test to the next of the same mock: its
#: httpx client costs an SSL context (~10 ms) to build. Async clients are bound to their event
#: loop, and the CDN token manager would hide the next test's token request: both are rebuilt.
KEPT = ("_auth", "_client")
#: ``id(fal_client.sync_client)`` -> (the mock's URL, its mock-bound cached values).
_kept: dict[int, tuple[str, dict[str, Any]]] = {}
REQUIRED = ("RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "CDN_URL", "REALTIME_URL_FORMAT")
#: Seconds :meth:`FalClientPatch.undo` waits for work left on fal_client's executor.
SETTLE_TIMEOUT = 5.0


class TrackingExecutor(concurrent.futures.ThreadPoolExecutor):
    """Stands in for ``fal_client.client.EXECUTOR`` during a test and remembers what it ran.

    A sync ``subscribe(client_timeout=...)`` runs on that executor and, when the timeout
    expires, leaves its poller running. The patch waits for such pollers before the test's
    jobs are dropped, so they finish against the job they polled instead of leaking requests
    into the next test or retrying against a stopped server at interpreter exit. Under
    ``virtual`` time the futures' timeouts run on the mock's clock (and such a poller stops at
    the timeout).
    """

    def __init__(self, virtual: Optional[VirtualTime] = None) -> None:
        super().__init__(thread_name_prefix="fal_mock-fal_client")
        self._futures: list[concurrent.futures.Future[Any]] = []
        self._futures_lock = threading.Lock()
        self._virtual = virtual

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if self._virtual is not None:
            future = self._virtual.submit(super().submit, fn, *args, **kwargs)
        else:
            future = super().submit(fn, *args, **kwargs)
        with self._futures_lock:
            self._futures.append(future)
        return future

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (up to ``timeout`` seconds) for everything submitted, then release the threads."""
        with self._futures_lock:
            futures = list(self._futures)
        concurrent.futures.wait(futures, timeout=timeout)
        self.shutdown(wait=False, cancel_futures=True)


class FalClientPatchError(RuntimeError):
    """The installed fal_client lacks something the redirect needs: refuse to run against fal.ai."""


def _version() -> tuple[int, ...]:
    try:
        text = metadata.version("fal-client")
    except metadata.PackageNotFoundError:
        return (0,)
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def import_fal_client() -> Optional[tuple[ModuleType, ModuleType]]:
    try:
        import fal_client
        import fal_client.client as client_module
    except ImportError:
        return None
    return fal_client, client_module


class FalClientPatch:
    """Apply with :meth:`apply`, undo with :meth:`undo` (both idempotent).

    With a ``clock``, the client's waits advance it instead of waiting (virtual time).
    """

    def __init__(self, base_url: str, clock: Optional[Clock] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self._saved_attrs: list[tuple[Any, str, Any]] = []
        self._saved_env: list[tuple[str, Optional[str]]] = []
        self._modules: Optional[tuple[ModuleType, ModuleType]] = None
        self._executor: Optional[TrackingExecutor] = None
        self._virtual: Optional[VirtualTime] = None

    @property
    def active(self) -> bool:
        return self._modules is not None

    def targets(self, client_module: ModuleType) -> dict[str, Any]:
        base = self.base_url
        targets: dict[str, Any] = {
            "RUN_URL_FORMAT": service_url(base, "run") + "/",
            "QUEUE_URL_FORMAT": service_url(base, "queue") + "/",
            "CDN_URL": service_url(base, "cdn"),
            "REALTIME_URL_FORMAT": websocket_url(base) + "/",
        }
        if hasattr(client_module, "REST_URL"):
            targets["REST_URL"] = service_url(base, "rest")
        elif _version() >= (0, 5, 9):
            raise FalClientPatchError(
                "fal_client.client.REST_URL is missing from this fal_client version; pytest-falmock "
                "cannot redirect uploads, so it refuses to let the test reach the real fal.ai. "
                "Pin a supported fal-client or opt out with @pytest.mark.fal_mock(patch_client=False)."
            )
        if hasattr(client_module, "FAL_CDN_FALLBACK_URL"):
            targets["FAL_CDN_FALLBACK_URL"] = service_url(base, "cdn")
        return targets

    def apply(self) -> bool:
        """Redirect fal_client; False when fal_client is not installed."""
        if self.active:
            return True
        modules = import_fal_client()
        if modules is None:
            return False
        fal_client, client_module = modules
        missing = [name for name in REQUIRED if not hasattr(client_module, name)]
        if missing:
            raise FalClientPatchError(
                f"fal_client.client has no {', '.join(missing)} in this fal_client version; "
                "pytest-falmock cannot redirect it, so it refuses to let the test reach the real "
                "fal.ai. Pin a supported fal-client or opt out with "
                "@pytest.mark.fal_mock(patch_client=False)."
            )
        targets = self.targets(client_module)
        has_executor = isinstance(getattr(client_module, "EXECUTOR", None), concurrent.futures.Executor)
        if self.clock is not None:
            missing = missing_waits(client_module) + ([] if has_executor else ["EXECUTOR"])
            if missing:
                raise FalClientPatchError(
                    f"fal_client.client has no {', '.join(missing)} in this fal_client version; "
                    "pytest-falmock cannot make its waits virtual. Pin a supported fal-client or "
                    "opt out with @pytest.mark.fal_mock(virtual_time=False)."
                )
            self._virtual = VirtualTime(self.clock)
            targets.update(self._virtual.replacements(client_module))
        for name, value in targets.items():
            self._set(client_module, name, value)
        if has_executor:
            self._executor = TrackingExecutor(self._virtual)
            self._set(client_module, "EXECUTOR", self._executor)
        self._env("FAL_KEY", DUMMY_FAL_KEY)
        for name in ("FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_FORCE_AUTH_BY_USER"):
            self._env(name, None)
        for name in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(name, "")
            hosts = [h for h in current.split(",") if h.strip()]
            for host in ("127.0.0.1", "localhost"):
                if host not in hosts:
                    hosts.append(host)
            self._env(name, ",".join(hosts))
        self._modules = modules
        self._drop_cached(fal_client)
        self._restore_kept(fal_client)
        return True

    def undo(self) -> None:
        if self._modules is None:
            return
        fal_client, _ = self._modules
        if self._virtual is not None:
            self._virtual.close()  # a poller parked at its timeout stops
            self._virtual = None
        if self._executor is not None:
            self._executor.settle()  # while the mock still knows this test's jobs
            self._executor = None
        for target, name, old in reversed(self._saved_attrs):
            setattr(target, name, old)
        for name, value in reversed(self._saved_env):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_attrs.clear()
        self._saved_env.clear()
        self._keep(fal_client)
        self._drop_cached(fal_client)  # never leak clients bound to the mock
        self._modules = None

    def _set(self, target: Any, name: str, value: Any) -> None:
        self._saved_attrs.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def _env(self, name: str, value: Optional[str]) -> None:
        self._saved_env.append((name, os.environ.get(name)))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def _keep(self, fal_client: ModuleType) -> None:
        """Put the sync client's mock-bound cache aside for the next test of this mock."""
        client = getattr(fal_client, "sync_client", None)
        state = getattr(client, "__dict__", {})
        if getattr(state.get("_auth"), "token", None) == DUMMY_FAL_KEY:  # not a key the test set
            _kept[id(client)] = (self.base_url, {name: state[name] for name in KEPT if name in state})

    def _restore_kept(self, fal_client: ModuleType) -> None:
        client = getattr(fal_client, "sync_client", None)
        base_url, values = _kept.pop(id(client), ("", {}))
        if base_url == self.base_url:
            client.__dict__.update(values)
        elif hasattr(values.get("_client"), "close"):
            values["_client"].close()  # bound to a mock that is gone

    @staticmethod
    def _drop_cached(fal_client: ModuleType) -> None:
        for attr in ("sync_client", "async_client"):
            client = getattr(fal_client, attr, None)
            if client is None:
                continue
            state = getattr(client, "__dict__", {})
            for cached in CACHED:
                state.pop(cached, None)
