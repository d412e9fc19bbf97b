"""The installed version of a distribution, as numbers, for "from version X on" checks."""

from __future__ import annotations

import re
from typing import Optional

_LEADING_DIGITS = re.compile(r"\d+")


def installed_version(distribution: str, parts: int = 3) -> Optional[tuple[int, ...]]:
    """The first ``parts`` numbers of ``distribution``'s version (``1.0.3rc1`` -> ``(1, 0, 3)``),
    or None when it is not installed."""
    from importlib import metadata  # on use: the FAL_MOCK_URL start-up hook imports our callers

    try:
        text = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    numbers = []
    for piece in text.split(".")[:parts]:
        digits = _LEADING_DIGITS.match(piece)
        numbers.append(int(digits.group()) if digits else 0)
    return tuple(numbers)
