"""pytest-falmock: a local, deterministic stand-in for the fal.ai API in every test."""

from __future__ import annotations

from ._client_patch import FalClientPatchError
from ._errors import FalMockUsageError, FalMockWarning
from ._fixture_files import FixtureFileError
from ._journal import FalRequest, ServedFile, UnmatchedRequest, Upload, WebhookDelivery
from ._mock import FalMock

__version__ = "0.1.0"

__all__ = [
    "FalClientPatchError",
    "FalMock",
    "FalMockUsageError",
    "FalMockWarning",
    "FalRequest",
    "FixtureFileError",
    "ServedFile",
    "UnmatchedRequest",
    "Upload",
    "WebhookDelivery",
    "__version__",
]
