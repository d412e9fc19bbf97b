"""What recording writes: the fixture file (atomic, locked) and the secrets kept out of it."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from filelock import FileLock

from ._constants import DUMMY_FAL_KEY, REDACTED
from ._fixture_files import FixtureFileError, read_document

#: Seconds to wait for another process's lock on the fixture file.
LOCK_TIMEOUT = 60.0
_WEBHOOK_QUERY = re.compile(r"(fal_webhook=)[^&#\s\"']*")


# -- credentials ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """The fal key found in the environment at session start (before any patch)."""

    key: Optional[str] = None
    #: Every secret string that must never be written (the key and its parts).
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Credentials:
        key = environ.get("FAL_KEY", "").strip()
        if key and key != DUMMY_FAL_KEY:
            return cls(key, secret_parts(key))
        key_id = environ.get("FAL_KEY_ID", "").strip()
        key_secret = environ.get("FAL_KEY_SECRET", "").strip()
        if key_id and key_secret:
            return cls(f"{key_id}:{key_secret}", secret_parts(f"{key_id}:{key_secret}"))
        return cls()

    def __repr__(self) -> str:  # never print the key
        return f"Credentials(key={'<set>' if self.key else None})"


def secret_parts(value: str) -> tuple[str, ...]:
    """``value`` and the pieces of it that are secret on their own (``Key id:secret`` -> id, secret)."""
    token = value.strip()
    if token.lower().startswith(("key ", "bearer ")):
        token = token.split(" ", 1)[1].strip()
    parts = {value, token, *token.split(":", 1)}
    # short fragments would redact innocent text; a real key part is long
    return tuple(sorted((p for p in parts if len(p) >= 6), key=len, reverse=True))


# -- redaction --------------------------------------------------------------------------------
def redact_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _WEBHOOK_QUERY.sub(r"\1" + REDACTED, text)


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """A copy of a JSON value with secrets and ``fal_webhook`` query values replaced."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {redact_text(str(k), secrets): redact(v, secrets) for k, v in value.items()}
    return value


# -- the fixture file -------------------------------------------------------------------------
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
