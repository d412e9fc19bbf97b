"""The fixture file a recording writes: atomic, under a cross-process lock, with its media.

Media files live in ``<stem>.media/`` next to the fixture file ``<stem>.json``, named by the
SHA-256 of their bytes; entries name them by a path relative to the fixture file. Downloads
land in hidden temporary files in that folder and are moved into place under the lock, when
their entry is written; every write then deletes the files no entry names any more.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from filelock import FileLock

from ._fixture_files import FixtureFileError, read_document

#: Seconds to wait for another process's lock on the fixture file.
LOCK_TIMEOUT = 60.0
#: A download's temporary file older than this was left by a process that died: removed.
STALE_TEMP_SECONDS = 3600.0
#: (temporary file, final path) of a downloaded media file.
PendingMedia = tuple[Path, Path]


def media_folder(target: Path) -> Path:
    """Where the media of fixture file ``target`` are kept: ``<stem>.media`` beside it."""
    return target.with_name(f"{target.stem}.media")


def discard(pending: Iterable[PendingMedia]) -> None:
    for temporary, _ in pending:
        temporary.unlink(missing_ok=True)


class FixtureWriter:
    """Appends or replaces entries of one fixture file: atomic, under a cross-process lock."""

    def __init__(self, path: Path, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self.media_dir = media_folder(path)
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

    def save(
        self, entry: dict[str, Any], *, replace: bool, media: Sequence[PendingMedia] = ()
    ) -> dict[str, Any]:
        """Append ``entry``; an entry with the same match is replaced in place (``replace``) or
        kept. ``media`` are moved into place with it. Returns the entry the file now holds."""
        try:
            with self._lock:
                document, entries = self._entries()
                for i, old in enumerate(entries):
                    if isinstance(old, dict) and old.get("match") == entry["match"]:
                        if not replace:
                            return old
                        entries[i] = entry
                        break
                else:
                    entries.append(entry)
                for temporary, final in media:
                    os.replace(temporary, final)
                self._write(document)
                self._sweep(entries)
                return entry
        finally:
            discard(media)  # those not moved into place (kept entry, or an error)

    def _sweep(self, entries: list[Any]) -> None:
        """Delete media files no entry names (e.g. replaced by a new recording)."""
        folder = self.media_dir
        if not folder.is_dir():
            return
        named = set()
        for entry in entries:
            media = entry.get("media") if isinstance(entry, dict) else None
            for item in media.values() if isinstance(media, dict) else ():
                if isinstance(item, dict) and isinstance(item.get("file"), str):
                    named.add((self.path.parent / item["file"]).resolve())
        now = time.time()
        for file in folder.iterdir():
            if not file.is_file():
                continue
            if file.name.startswith("."):  # a download under way (or left by a dead process)
                if now - file.stat().st_mtime > STALE_TEMP_SECONDS:
                    file.unlink(missing_ok=True)
            elif file.resolve() not in named:
                file.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()

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
