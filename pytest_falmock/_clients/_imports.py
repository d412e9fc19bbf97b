"""A post-import hook: run a callback when a watched module has just been executed.

The guard and the ``FAL_MOCK_URL`` start-up hook must patch ``fal_client`` and ``fal`` without
importing them (an app that never uses fal must not pay for it). One finder at the front of
``sys.meta_path`` lets the normal finders find the watched modules and wraps their loader so the
callback runs right after the module body; for every other import it costs one set lookup.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, cast

if TYPE_CHECKING:  # the finder and loader protocols are duck-typed: importlib.abc stays unloaded
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

Callback = Callable[[str, "ModuleType"], None]

_lock = threading.Lock()
_finder: Optional[_PostImportFinder] = None


class _PatchingLoader:
    """Executes the module with the real loader, then hands it to the callback."""

    def __init__(self, loader: Any, callback: Callback) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: ModuleSpec) -> Optional[ModuleType]:
        module: Optional[ModuleType] = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None:  # the module never sees this wrapper
            spec.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        self._callback(module.__name__, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder:
    def __init__(self) -> None:
        #: Replaced, never mutated, so ``find_spec`` reads it without a lock.
        self.callbacks: dict[str, Callback] = {}

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[ModuleSpec]:
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        spec: Optional[ModuleSpec] = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or isinstance(finder, _PostImportFinder) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = cast("Loader", _PatchingLoader(spec.loader, callback))
        return spec


def watch(names: Sequence[str], callback: Callback) -> None:
    """Call ``callback(name, module)`` right after any of ``names`` is imported from now on.

    Idempotent; one finder per process. Modules already imported are the caller's business.
    """
    global _finder
    with _lock:
        if _finder is None:
            _finder = _PostImportFinder()
        _finder.callbacks = {**_finder.callbacks, **dict.fromkeys(names, callback)}
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
