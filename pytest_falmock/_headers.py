"""A small immutable, case-insensitive header mapping (what the journal hands out)."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Tuple

from ._constants import REDACTED

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-fal-key"})


class Headers(Mapping[str, str]):
    """Read-only headers; ``headers["Authorization"]`` and ``headers["authorization"]`` agree."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in items:
            self._items.setdefault(key.lower(), (key, value))

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"

    def redacted(self) -> Headers:
        """A copy with credentials replaced by ``[REDACTED]``."""
        return Headers((k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in self.items())


def as_headers(items: Mapping[str, str] | Iterable[Tuple[str, str]]) -> Headers:
    if isinstance(items, Headers):
        return items
    if isinstance(items, Mapping):
        return Headers(items.items())
    return Headers(items)
