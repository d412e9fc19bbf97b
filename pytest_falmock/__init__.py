"""pytest-falmock: a local, deterministic stand-in for the fal.ai API in every test.

The public names load on first use, so the interpreter start-up hook (``FAL_MOCK_URL``, see
``_clients/_startup.py``) can import its few modules without the server's dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._clients import FalClientPatchError
    from ._errors import FalMockUsageError, FalMockWarning
    from ._fixture_files import FixtureFileError
    from ._journal import FalRequest, ServedFile, UnmatchedRequest, Upload, WebhookDelivery
    from ._mock import FalMock
    from ._settings import Settings

__version__ = "0.1.0"

#: Where each public name lives.
_PUBLIC = {
    "FalClientPatchError": "._clients",
    "FalMock": "._mock",
    "FalMockUsageError": "._errors",
    "FalMockWarning": "._errors",
    "FalRequest": "._journal",
    "FixtureFileError": "._fixture_files",
    "ServedFile": "._journal",
    "Settings": "._settings",
    "UnmatchedRequest": "._journal",
    "Upload": "._journal",
    "WebhookDelivery": "._journal",
}

__all__ = [
    "FalClientPatchError",
    "FalMock",
    "FalMockUsageError",
    "FalMockWarning",
    "FalRequest",
    "FixtureFileError",
    "ServedFile",
    "Settings",
    "UnmatchedRequest",
    "Upload",
    "WebhookDelivery",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
