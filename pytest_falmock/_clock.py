"""The mock's one clock: wall time plus a virtual offset.

Everything time-based in the engine (job latency, run and stream latency, log timestamps)
reads this clock, never ``time.time()`` directly. Within a test the offset only grows (a reset
takes it back to 0, with the jobs that depended on it): the patched
clients' sleeps (``_clients/_virtual_time.py``), a run's latency under virtual time and
:meth:`Clock.advance` (``fal_mock.advance()``, ``POST /__falmock/advance``) add to it, while
real time keeps flowing underneath, so an app's own ``time.sleep`` still moves the clock.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

Listener = Callable[[], None]
#: Seconds the clock may run ahead of the wall clock, in all (100 years): timestamps stay
#: dates (``datetime`` ends in the year 9999) and sums stay finite.
MAX_OFFSET = 100 * 365 * 24 * 3600.0


def check_seconds(value: object, where: str, clock: Optional[Clock] = None) -> float:
    """``value`` as a finite, non-negative number of seconds, else ``ValueError``/``TypeError``;
    with ``clock``, also no more than it may still move ahead (:data:`MAX_OFFSET` in all)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: seconds must be a number, got {value!r}")
    try:
        seconds = float(value)  # an int past float's range (JSON has no limit) raises here
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{where}: seconds must be a finite, non-negative number, got {value!r:.40}")
    if clock is not None and seconds > MAX_OFFSET - clock.offset:
        raise ValueError(
            f"{where}: the mock's clock runs at most {MAX_OFFSET:,.0f} s (100 years) ahead of the "
            f"wall clock, and it is {clock.offset:,.0f} s ahead; got {value!r:.40}"
        )
    return seconds


class Clock:
    """Wall time plus a virtual offset; listeners hear about every advance."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    @property
    def offset(self) -> float:
        """Seconds the clock is ahead of the wall clock."""
        return self._offset

    def time(self) -> float:
        """The mock's wall time (``time.time()`` plus the offset), for timestamps."""
        return time.time() + self._offset

    def monotonic(self) -> float:
        """``time.monotonic()`` plus the offset, for durations (latency, deadlines)."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (already validated) and tell the listeners."""
        if not seconds > 0:
            return
        with self._lock:
            self._offset = min(self._offset + seconds, MAX_OFFSET)  # a client's absurd wait too
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def reset(self) -> None:
        """Back to the wall clock (a reset: nothing of the last test waits on the offset any more)."""
        with self._lock:
            self._offset = 0.0

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener()`` after every advance (in the advancing thread); returns its remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove
