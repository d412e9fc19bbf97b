"""The exceptions and warnings users see."""

from __future__ import annotations


class FalMockUsageError(ValueError):
    """A marker, option or helper was called with arguments it does not accept."""


class FalMockWarning(UserWarning):
    """Something the mock did on a test's behalf that the test may not expect (e.g. a blocked webhook)."""
