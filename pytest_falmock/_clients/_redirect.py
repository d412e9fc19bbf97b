""":class:`ClientRedirect`: point the fal clients at one server, for as long as it is applied.

Redirects stack. In a pytest run the guard's redirect sits at the bottom for the whole session
and a test's mock is applied above it; undoing the mock's restores the guard's values, not the
clients' own. A client module imported while redirects are applied is patched by each of them,
bottom to top, right after its import (:mod:`._imports`): nothing here imports a client.
"""

from __future__ import annotations

import os
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence, Union

from .._constants import DUMMY_FAL_KEY
from . import _fal_apps, _fal_client
from ._imports import watch
from ._patches import LOOPBACK_HOSTS, Patches

if TYPE_CHECKING:
    from .._clock import Clock
    from ._virtual_time import VirtualTime

#: The client modules a redirect patches, and how.
ADAPTERS = {_fal_client.NAME: _fal_client.redirect, _fal_apps.NAME: _fal_apps.redirect}

_lock = threading.RLock()
#: The redirects in force, bottom first.
_applied: list[ClientRedirect] = []


class FalClientPatchError(RuntimeError):
    """An installed fal client lacks something the redirect needs: refuse to run against fal.ai."""


class Target:
    """What the client adapters need to know about a redirect (a plain class: the start-up hook
    imports this module, and ``dataclasses`` alone would double its cost)."""

    __slots__ = ("base_url", "key", "opt_out", "per_test", "virtual")

    def __init__(
        self,
        base_url: str,
        key: Callable[[], str],
        opt_out: str,
        per_test: bool = False,
        virtual: Optional[VirtualTime] = None,
    ) -> None:
        self.base_url = base_url
        self.key = key
        self.opt_out = opt_out
        #: A ``fal_mock`` test's redirect: fal_client's executor is tracked and its mock-bound
        #: sync client kept for the next test of the same mock.
        self.per_test = per_test
        #: The test's virtual waits, when the mock's clock drives the clients' sleeps.
        self.virtual = virtual

    def missing(
        self, module: str, names: Sequence[str], package: str, distribution: str
    ) -> FalClientPatchError:
        return FalClientPatchError(
            f"{module} has no {', '.join(names)} in this {package} version; pytest-falmock "
            "cannot redirect it, so it refuses to let the test reach the real fal.ai. Pin a "
            f"supported {distribution} or opt out with {self.opt_out}."
        )

    def missing_waits(
        self, module: str, names: Sequence[str], package: str, distribution: str
    ) -> FalClientPatchError:
        return FalClientPatchError(
            f"{module} has no {', '.join(names)} in this {package} version; pytest-falmock cannot "
            f"make its waits virtual. Pin a supported {distribution} or opt out with "
            "@pytest.mark.fal_mock(virtual_time=False)."
        )


def environment_key() -> str:
    """The key a process's environment names (``FAL_KEY``, or ``FAL_KEY_ID:FAL_KEY_SECRET``),
    else the dummy key."""
    key = os.environ.get("FAL_KEY", "").strip()
    if key:
        return key
    key_id, secret = os.environ.get("FAL_KEY_ID", "").strip(), os.environ.get("FAL_KEY_SECRET", "").strip()
    return f"{key_id}:{secret}" if key_id and secret else DUMMY_FAL_KEY


class ClientRedirect:
    """Points ``fal_client`` and ``fal.apps`` at the server at ``base_url`` (its root,
    ``http://127.0.0.1:<port>``) between :meth:`apply` and :meth:`undo` (both idempotent).

    ``base_url`` may be a callable, asked when the first client module is patched (the guard
    starts its server then). ``key`` is the key the clients send (None: the environment's, or
    the dummy key). ``environment`` is set, and ``bypass`` added to ``NO_PROXY``, when the first
    client module is patched. ``opt_out`` ends the error raised when a client lacks something.
    """

    def __init__(
        self,
        base_url: Union[str, Callable[[], str]],
        *,
        key: Optional[str] = DUMMY_FAL_KEY,
        environment: Mapping[str, Optional[str]] = {},
        bypass: Sequence[str] = LOOPBACK_HOSTS,
        per_test: bool = False,
        clock: Optional[Clock] = None,
        opt_out: str,
    ) -> None:
        self._base_url = base_url
        self._key = key
        self._environment = dict(environment)
        self._bypass = tuple(bypass)
        self._per_test = per_test
        self._clock = clock
        self._opt_out = opt_out
        self._patches = Patches()
        self._patched: set[str] = set()
        self._virtual: Optional[VirtualTime] = None

    @classmethod
    def for_test(cls, base_url: str, clock: Optional[Clock] = None) -> ClientRedirect:
        """The ``fal_mock`` fixture's redirect: the dummy key in the environment (a key the test
        sets itself is sent as it is), the developer's other credentials hidden, fal_client's
        executor tracked; with the mock's ``clock``, the clients' waits advance it (virtual time)."""
        environment = {
            "FAL_KEY": DUMMY_FAL_KEY,
            "FAL_KEY_ID": None,
            "FAL_KEY_SECRET": None,
            "FAL_FORCE_AUTH_BY_USER": None,
        }
        return cls(
            base_url.rstrip("/"),
            key=None,
            environment=environment,
            per_test=True,
            clock=clock,
            opt_out="@pytest.mark.fal_mock(patch_client=False)",
        )

    @property
    def active(self) -> bool:
        """Applied and not undone."""
        return self in _applied

    @property
    def patched(self) -> frozenset[str]:
        """The client modules this redirect changed (``fal_client.client``, ``fal.apps``)."""
        return frozenset(self._patched)

    def apply(self) -> bool:
        """Redirect the clients imported now and those imported later; True if any client
        module was there to patch."""
        with _lock:
            if self not in _applied:
                watch(list(ADAPTERS), _on_import)
                _applied.append(self)
                try:
                    self._patch_imported()
                except BaseException:
                    _applied.remove(self)
                    self._restore()
                    raise
            return bool(self._patched)

    def undo(self) -> None:
        """Restore what :meth:`apply` changed (redirects applied later stay in force)."""
        with _lock:
            if self not in _applied:
                return
            above = _applied[_applied.index(self) + 1 :]
            for redirect in reversed(above):
                redirect._restore()
            _applied.remove(self)
            self._restore()
            for redirect in above:
                redirect._patch_imported()

    # -- internals ------------------------------------------------------------------------
    def _patch_imported(self) -> None:
        for name in ADAPTERS:
            module = sys.modules.get(name)
            if module is not None:
                self._patch(name, module)

    def _patch(self, name: str, module: ModuleType) -> None:
        if name in self._patched:
            return
        base_url = self._base_url() if callable(self._base_url) else self._base_url
        key = self._key
        first = not self._patched
        if first:
            for variable, value in self._environment.items():
                self._patches.env(variable, value)
            self._patches.bypass_proxies(self._bypass)
            if self._clock is not None:
                from ._virtual_time import VirtualTime

                self._virtual = VirtualTime(self._clock)
                self._patches.before_undo(self._virtual.close)  # a poller parked at its timeout stops
        target = Target(
            base_url,
            (lambda: key) if key is not None else environment_key,
            self._opt_out,
            self._per_test,
            self._virtual if self._clock is not None else None,
        )
        self._patched.add(name)
        ADAPTERS[name](module, target, self._patches)

    def _restore(self) -> None:
        self._patches.undo()
        self._patched.clear()


def _on_import(name: str, module: ModuleType) -> None:
    """A client module was just imported: every redirect in force patches it, bottom first."""
    with _lock:
        for redirect in list(_applied):
            redirect._patch(name, module)
