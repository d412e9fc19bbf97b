"""Validation of the polling-realism and marker keywords.

Every public way to set these (``@pytest.mark.fal_queue``, ``fal_mock.queue()``,
``@pytest.mark.fal_mock``, the ``fal-mock`` command line) funnels through here, so a typo
gets the same message everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


class FalMockUsageError(ValueError):
    """A marker, option or helper was called with arguments it does not accept."""


class FalMockWarning(UserWarning):
    """Something the mock did on a test's behalf that the test may not expect (e.g. a blocked webhook)."""


@dataclass(frozen=True)
class QueueConfig:
    """How many status polls a job spends in each state.

    On the k-th status call a job is ``IN_QUEUE`` while ``k < in_progress``,
    ``IN_PROGRESS`` while ``k < completed`` and ``COMPLETED`` from ``k >= completed``.
    ``completed == 0`` means the job is complete at submit.
    """

    in_progress: int = 0
    completed: int = 0


QUEUE_KEYWORDS = ("polls", "polls_before_in_progress", "polls_before_completed")
MOCK_KEYWORDS = ("allow_unmatched", "patch_client", "allow_remote_webhooks")


def _count(where: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FalMockUsageError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise FalMockUsageError(f"{where}: {name} must be a non-negative integer, got {value}")
    return value


def queue_config(where: str, args: tuple[Any, ...] = (), **kwargs: Any) -> QueueConfig:
    """Resolve ``polls`` / ``polls_before_in_progress`` / ``polls_before_completed``.

    ``where`` names the caller in error messages (e.g. ``"@pytest.mark.fal_queue"``).
    """
    if args:
        raise FalMockUsageError(
            f"{where}: takes keyword arguments only ({', '.join(QUEUE_KEYWORDS)}), got positional {args!r}"
        )
    unknown = sorted(set(kwargs) - set(QUEUE_KEYWORDS))
    if unknown:
        raise FalMockUsageError(
            f"{where}: unknown keyword {unknown[0]!r} (expected one of: {', '.join(QUEUE_KEYWORDS)})"
        )
    polls = kwargs.get("polls")
    first = kwargs.get("polls_before_in_progress")
    done = kwargs.get("polls_before_completed")
    if polls is not None and (first is not None or done is not None):
        both = "polls_before_in_progress" if first is not None else "polls_before_completed"
        raise FalMockUsageError(
            f"{where}: polls cannot be combined with {both}; give either polls=N or the two thresholds"
        )
    if polls is not None:
        n = _count(where, "polls", polls)
        if n == 0:
            return QueueConfig(0, 0)
        if n == 1:
            return QueueConfig(0, 1)
        return QueueConfig(1, n)
    if first is None and done is None:
        return QueueConfig(0, 0)
    if done is None:
        a = _count(where, "polls_before_in_progress", first)
        return QueueConfig(a, a + 1)
    c = _count(where, "polls_before_completed", done)
    if first is None:
        return QueueConfig(0, max(c, 1))
    a = _count(where, "polls_before_in_progress", first)
    return QueueConfig(a, max(c, a + 1))


@dataclass(frozen=True)
class MockOptions:
    """Keywords of ``@pytest.mark.fal_mock``."""

    allow_unmatched: bool = False
    patch_client: bool = True
    allow_remote_webhooks: bool = False


def mock_options(where: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> MockOptions:
    if args:
        raise FalMockUsageError(
            f"{where}: takes keyword arguments only ({', '.join(MOCK_KEYWORDS)}), got positional {args!r}"
        )
    unknown = sorted(set(kwargs) - set(MOCK_KEYWORDS))
    if unknown:
        raise FalMockUsageError(
            f"{where}: unknown keyword {unknown[0]!r} (expected one of: {', '.join(MOCK_KEYWORDS)})"
        )
    for name, value in kwargs.items():
        if not isinstance(value, bool):
            raise FalMockUsageError(f"{where}: {name} must be True or False, got {value!r}")
    return MockOptions(**kwargs)
