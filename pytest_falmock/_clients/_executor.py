"""fal_client's executor, tracked for the length of a test (the ``fal_mock`` fixture's redirect)."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ._virtual_time import VirtualTime

#: Seconds a test's redirect waits, when undone, for work left on fal_client's executor.
SETTLE_TIMEOUT = 5.0


class TrackingExecutor(concurrent.futures.ThreadPoolExecutor):
    """Stands in for ``fal_client.client.EXECUTOR`` during a test and remembers what it ran.

    A sync ``subscribe(client_timeout=...)`` runs on that executor and, when the timeout
    expires, leaves its poller running. The redirect waits for such pollers before the test's
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


def has_executor(module: object) -> bool:
    """``module.EXECUTOR`` is an executor a test can track."""
    return isinstance(getattr(module, "EXECUTOR", None), concurrent.futures.Executor)
