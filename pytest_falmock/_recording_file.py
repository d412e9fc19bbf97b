"""The fixture file a recording writes: atomic, under a cross-process lock."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from filelock import FileLock

from ._fixture_files import FixtureFileError, read_document

#: Seconds to wait for another process's lock on the fixture file.
LOCK_TIMEOUT = 60.0


class FixtureWriter:
    """Appends or replaces entries of one fixture file: atomic, under a cross-process lock."""

    def __init__(self, path: Path, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock", timeout=lock_timeout)

    def _entries(self) -> tuple[dict[str, Any], list[Any]]:
        if not self.path.exists():
            empty: dict[str, Any] = {"fixtures": []}
            return empty, empty["fixtures"]
        document = read_document(self.path)
        if not isinstance(document, dict) or not isinstance(document.get("fixtures"), list):
            raise FixtureFileError(f'fal fixture file {self.path}: expected an object with a "fixtures" list')
        return document, document["fixtures"]

    def find(self, match: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """The entry recorded with exactly this match, if any (a plain read: writes are atomic)."""
        if not self.path.exists():
            return None
        _, entries = self._entries()
        for entry in entries:
            if isinstance(entry, dict) and entry.get("match") == match:
                return entry
        return None

    def save(self, entry: dict[str, Any], *, replace: bool) -> None:
        """Append ``entry``; an entry with the same match is replaced in place (``replace``) or kept."""
        with self._lock:
            document, entries = self._entries()
            for i, old in enumerate(entries):
                if isinstance(old, dict) and old.get("match") == entry["match"]:
                    if not replace:
                        return
                    entries[i] = entry
                    break
            else:
                entries.append(entry)
            self._write(document)

    def _write(self, document: Any) -> None:
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
