"""A small immutable, case-insensitive header mapping (what the journal hands out)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple, TypeVar, Union, overload

from ._constants import REDACTED

_T = TypeVar("_T")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-fal-key"})


class Headers(Mapping[str, str]):
    """Read-only headers; ``headers["Authorization"]`` and ``headers["authorization"]`` agree."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in items:
            self._items.setdefault(key.lower(), (key, value))

    @classmethod
    def from_folded(cls, items: dict[str, tuple[str, str]]) -> Headers:
        """Adopt ``{lowercased name: (name as sent, value)}`` as is (the HTTP parser's fast path)."""
        headers = cls.__new__(cls)
        headers._items = items
        return headers

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    @overload
    def get(self, key: str, /) -> Optional[str]: ...
    @overload
    def get(self, key: str, /, default: Union[str, _T]) -> Union[str, _T]: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        """Like ``Mapping.get``, without raising and catching ``KeyError`` on a miss."""
        item = self._items.get(key.lower())
        return default if item is None else item[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"

    def redacted(self) -> Headers:
        """A copy with credentials replaced by ``[REDACTED]`` (``self`` when there are none)."""
        if SECRET_HEADERS.isdisjoint(self._items):
            return self  # immutable, so sharing is safe
        return Headers((k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in self.items())
