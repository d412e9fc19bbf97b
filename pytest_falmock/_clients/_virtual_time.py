"""Virtual time for a patched client module: its waits advance the mock's clock instead of waiting.

For the test, only two names inside the client module are replaced (``replacements``), plus the
futures its executor hands out:

- ``time``: a proxy whose ``sleep`` advances the clock (sync poll intervals, retry backoff);
- ``asyncio``: a proxy whose ``sleep`` advances the clock and yields to the loop once (async poll
  intervals, retry backoff) and whose ``wait_for`` (``subscribe_async(client_timeout=...)``)
  times out on the mock's clock;
- the futures of :meth:`VirtualTime.submit` (sync ``subscribe(client_timeout=...)`` waits on
  one with ``result(timeout=...)``) time out on the mock's clock too.

Every other attribute is forwarded to the module the proxy wraps, so other libraries'
``time.sleep``, the event loop's other coroutines and ``time.time()`` seen by the app are
untouched. When a client timeout comes due during one of the client's sleeps, the clock moves
to the deadline, the waiter gives up (the client raises its timeout error and cancels the job),
and the abandoned poller stops there instead of polling on in the background.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
import weakref
from types import ModuleType
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar

from .._clock import Clock

T = TypeVar("T")
#: Real seconds a poller waits for its waiter: to set its deadline before the poller starts
#: (fal_client waits on the future right after submitting it) and, at the deadline, to give up
#: (it does so at once).
PARK_LIMIT = 5.0
#: The module names :meth:`VirtualTime.replacements` replaces, with the attributes each needs.
NEEDED = {"time": ("sleep",), "asyncio": ("sleep", "wait_for")}


class PollerAbandoned(BaseException):
    """Ends a sync poller once its ``subscribe(client_timeout=...)`` has given up on it.

    A ``BaseException``, so client code catching ``Exception`` does not swallow it; it ends up
    in a future nobody reads.
    """


def missing_waits(module: ModuleType, names: Sequence[str] = tuple(NEEDED)) -> list[str]:
    """What ``module`` lacks for virtual time, as ``module.name`` strings (empty when nothing);
    ``names`` are the modules of :data:`NEEDED` it uses (``fal.apps`` only sleeps: ``("time",)``)."""
    missing: list[str] = []
    for name in names:
        attributes = NEEDED[name]
        target = getattr(module, name, None)
        missing.extend(f"{name}.{attr}" for attr in attributes if not callable(getattr(target, attr, None)))
    return missing


class _ModuleProxy:
    """Stands in for a module inside one client module: ``overrides`` first, the rest forwarded."""

    def __init__(self, wrapped: Any, **overrides: Any) -> None:
        self.__dict__.update(overrides)
        self.__dict__["_wrapped"] = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_wrapped"], name)

    def __repr__(self) -> str:
        return f"<fal_mock virtual-time proxy of {self.__dict__['_wrapped']!r}>"


class _SyncDeadline:
    """The deadline of one executor future, shared by its waiter and its poller thread."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        #: Clock time (monotonic) the waiter gives up at: None until the waiter comes, infinite
        #: when it waits without a timeout.
        self.at: Optional[float] = None
        self.given_up = False

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """The patch is undone: a parked poller stops now."""
        with self._cond:
            self.given_up = True
            self._cond.notify_all()

    def wait(self, future: concurrent.futures.Future[Any], timeout: Optional[float]) -> None:
        """In the waiter: return once ``future`` is done; ``TimeoutError`` when the clock passes
        ``timeout`` seconds from now first."""
        remove = self._clock.listen(self.notify)
        try:
            with self._cond:
                self.at = math.inf if timeout is None else self._clock.monotonic() + timeout
                self._cond.notify_all()
                while not future.done():
                    remaining = self.at - self._clock.monotonic()
                    if remaining <= 0:
                        self.given_up = True
                        self._cond.notify_all()
                        raise concurrent.futures.TimeoutError()
                    self._cond.wait(None if timeout is None else remaining)
        finally:
            remove()

    def await_waiter(self) -> None:
        """In the poller, before it starts: fal_client waits on the future right after
        submitting it, so the deadline is known before the first request - the job the poller
        submits never starts before it, and no sleep passes a deadline nobody set yet."""
        with self._cond:
            self._cond.wait_for(lambda: self.at is not None or self.given_up, PARK_LIMIT)

    def sleep(self, seconds: float) -> bool:
        """In the poller: sleep ``seconds`` of clock time, or up to the deadline when it comes
        first; True once the waiter has given up."""
        with self._cond:
            if self.given_up:
                return True
            at = math.inf if self.at is None else self.at
        now = self._clock.monotonic()
        if now + seconds < at:
            self._clock.advance(seconds)
            return False
        self._clock.advance(at - now)
        with self._cond:
            return self._cond.wait_for(lambda: self.given_up, PARK_LIMIT)


class VirtualFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A future that mirrors ``inner`` but whose ``result``/``exception`` timeouts run on the clock."""

    def __init__(self, inner: concurrent.futures.Future[Any], deadline: _SyncDeadline) -> None:
        super().__init__()
        self._inner = inner
        self._deadline = deadline
        inner.add_done_callback(self._mirror)

    def _mirror(self, inner: concurrent.futures.Future[Any]) -> None:
        if inner.cancelled():
            super().cancel()
        else:
            error = inner.exception()
            if error is not None:
                self.set_exception(error)
            else:
                self.set_result(inner.result())
        self._deadline.notify()

    def cancel(self) -> bool:
        return self._inner.cancel()  # the done callback mirrors a successful cancel

    def running(self) -> bool:
        return self._inner.running()

    def result(self, timeout: Optional[float] = None) -> Any:
        self._deadline.wait(self, timeout)
        return super().result()

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        self._deadline.wait(self, timeout)
        return super().exception()


class VirtualTime:
    """The virtual waits of one test, all reading and advancing ``clock``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._local = threading.local()
        self._deadlines: weakref.WeakSet[_SyncDeadline] = weakref.WeakSet()
        #: The clock time each virtual ``wait_for``'s task is given up at.
        self._task_deadlines: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    def replacements(self, module: ModuleType, names: Sequence[str] = tuple(NEEDED)) -> dict[str, Any]:
        """The names to set on ``module`` (check :func:`missing_waits` with the same ``names`` first)."""
        proxies: dict[str, Callable[[], Any]] = {
            "time": lambda: _ModuleProxy(module.time, sleep=self.sleep),
            "asyncio": lambda: _ModuleProxy(module.asyncio, sleep=self.async_sleep, wait_for=self.wait_for),
        }
        return {name: proxies[name]() for name in names}

    def close(self) -> None:
        """Stop the pollers parked at a deadline (the patch is being undone)."""
        for deadline in list(self._deadlines):
            deadline.close()

    # -- sync -------------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """``time.sleep`` for the client: the clock moves on, nobody waits."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        deadline: Optional[_SyncDeadline] = getattr(self._local, "deadline", None)
        if deadline is None:
            self.clock.advance(seconds)
        elif deadline.sleep(seconds):
            raise PollerAbandoned()

    def submit(
        self,
        submit: Callable[[Callable[[], T]], concurrent.futures.Future[T]],
        fn: Callable[..., T],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> concurrent.futures.Future[T]:
        """Run ``fn`` through ``submit`` (an executor's); the future's timeouts run on the clock."""
        deadline = _SyncDeadline(self.clock)
        self._deadlines.add(deadline)

        def run() -> T:
            deadline.await_waiter()
            self._local.deadline = deadline
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.deadline = None

        return VirtualFuture(submit(run), deadline)

    # -- async ------------------------------------------------------------------------------
    async def async_sleep(self, delay: float, result: Any = None) -> Any:
        """``asyncio.sleep`` for the client: the clock moves on, the loop gets one turn."""
        task = asyncio.current_task()
        at = self._task_deadlines.get(task) if task is not None else None
        park = 0.0
        if delay > 0:
            now = self.clock.monotonic()
            if at is not None and now + delay >= at:
                self.clock.advance(at - now)
                park = PARK_LIMIT  # the virtual wait_for cancels this task meanwhile
            else:
                self.clock.advance(delay)
        await asyncio.sleep(park)
        return result

    async def wait_for(self, awaitable: Awaitable[T], timeout: Optional[float]) -> T:
        """``asyncio.wait_for`` for the client, timing out when the clock passes the deadline."""
        if timeout is None:
            return await awaitable
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(awaitable)
        at = self._task_deadlines[task] = self.clock.monotonic() + timeout
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(woken.set)

        remove = self.clock.listen(wake)
        try:
            while not task.done():
                remaining = at - self.clock.monotonic()
                if remaining <= 0:
                    task.cancel()
                    await asyncio.wait({task})
                    if task.cancelled():
                        raise asyncio.TimeoutError()
                    break
                woken.clear()
                waiter = loop.create_task(woken.wait())
                try:
                    await asyncio.wait({task, waiter}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            return task.result()
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            remove()
