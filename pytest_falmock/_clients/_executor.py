"""fal_client's executor, tracked for the length of a test (the ``fal_mock`` fixture's redirect)."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ._virtual_time import VirtualTime

#: Seconds a test's redirect waits, when undone, for work left on fal_client's executor.
SETTLE_TIMEOUT = 5.0


class TrackingExecutor(concurrent.futures.Executor):
    """Stands in for ``fal_client.client.EXECUTOR`` during a test and remembers what it ran.

    A sync ``subscribe(client_timeout=...)`` runs on that executor and, when the timeout
    expires, leaves its poller running. The redirect waits for such pollers before the test's
    jobs are dropped, so they finish against the job they polled instead of leaking requests
    into the next test or retrying against a stopped server at interpreter exit. Under
    ``virtual`` time the futures' timeouts run on the mock's clock (and such a poller stops at
    the timeout).

    Every ``fal_mock`` test installs one, and most never submit anything: the thread pool is
    made on the first :meth:`submit`.
    """

    def __init__(self, virtual: Optional[VirtualTime] = None) -> None:
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._futures: list[concurrent.futures.Future[Any]] = []
        self._lock = threading.Lock()
        self._virtual = virtual
        self._shut_down = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="fal_mock-fal_client")
            pool = self._pool
        if self._virtual is not None:
            future = self._virtual.submit(pool.submit, fn, *args, **kwargs)
        else:
            future = pool.submit(fn, *args, **kwargs)
        with self._lock:
            self._futures.append(future)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut_down = True
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (up to ``timeout`` seconds) for everything submitted, then release the threads."""
        with self._lock:
            futures = list(self._futures)
        if futures:
            concurrent.futures.wait(futures, timeout=timeout)
        self.shutdown(wait=False, cancel_futures=True)


def has_executor(module: object) -> bool:
    """``module.EXECUTOR`` is an executor a test can track."""
    return isinstance(getattr(module, "EXECUTOR", None), concurrent.futures.Executor)
