"""Reversible changes: module attributes and environment variables, undone in reverse order."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

#: The hosts a mock or the guard listens on; HTTP proxies must never see them.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


class Patches:
    """Records every change it makes so :meth:`undo` restores the previous state exactly."""

    def __init__(self) -> None:
        self._attrs: list[tuple[Any, str, Any]] = []
        self._env: list[tuple[str, Optional[str]]] = []
        self._before: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []

    def set(self, target: Any, name: str, value: Any) -> None:
        self._attrs.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def env(self, name: str, value: Optional[str]) -> None:
        """Set (or, with None, unset) an environment variable."""
        self._env.append((name, os.environ.get(name)))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def bypass_proxies(self, hosts: Iterable[str]) -> None:
        """Add ``hosts`` to ``NO_PROXY`` and ``no_proxy`` (keeping what is there)."""
        for name in ("NO_PROXY", "no_proxy"):
            self.env(name, no_proxy_value(os.environ.get(name, ""), hosts))

    def before_undo(self, action: Callable[[], None]) -> None:
        """Run ``action`` first when undoing (while the changes are still in place)."""
        self._before.append(action)

    def after_undo(self, action: Callable[[], None]) -> None:
        """Run ``action`` last when undoing (once everything is restored)."""
        self._after.append(action)

    def undo(self) -> None:
        before, self._before = self._before, []
        after, self._after = self._after, []
        for action in before:
            action()
        for target, name, old in reversed(self._attrs):
            setattr(target, name, old)
        for name, value in reversed(self._env):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._attrs.clear()
        self._env.clear()
        for action in after:
            action()


def no_proxy_value(current: str, hosts: Iterable[str]) -> str:
    """``current`` (a ``NO_PROXY`` value) with ``hosts`` appended where missing."""
    entries = [entry for entry in current.split(",") if entry.strip()]
    present = {entry.strip() for entry in entries}
    for host in hosts:
        if host not in present:
            entries.append(host)
            present.add(host)
    return ",".join(entries)
