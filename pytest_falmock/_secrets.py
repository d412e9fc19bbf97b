"""Secrets: the fal key found at start-up, and keeping it (and webhook URLs) out of what is written."""

from __future__ import annotations

import base64
import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from ._constants import DUMMY_FAL_KEY, REDACTED

_WEBHOOK_QUERY = re.compile(r"(fal_webhook=)[^&#\s\"']*")
#: Query parameters that carry a credential (the realtime token of a WebSocket URL).
SECRET_QUERY = frozenset({"fal_jwt_token"})


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
        if key_id and key_secret and f"{key_id}:{key_secret}" != DUMMY_FAL_KEY:
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


#: Fragments shorter than this are not looked for (they would redact innocent text).
_MIN_FRAGMENT = 6


def _spelled(secret: str) -> str:
    """A pattern for ``secret`` as is or percent-encoded (wholly or in part, once or twice),
    in any letter case (the caller compiles it case-insensitively)."""
    out = []
    for char in secret:
        escapes = "".join(f"%(?:25)?{byte:02x}" for byte in char.encode())
        plain = re.escape(char) + ("|\\+" if char == " " else "")
        out.append(f"(?:{plain}|{escapes})")
    return "".join(out)


def _base64_fragments(secret: str) -> set[str]:
    """What base64 of any text containing ``secret`` must contain, at each of the three
    alignments, in the standard and URL-safe alphabets, for the secret in its own, lower and
    upper case."""
    fragments = set()
    for variant in {secret, secret.lower(), secret.upper()}:
        data = variant.encode()
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + data).decode()
            start = (8 * shift + 5) // 6  # the first character made of the secret's bits only
            end = 8 * (shift + len(data)) // 6  # past the last one
            fragment = encoded[start:end]
            if len(fragment) >= _MIN_FRAGMENT:
                fragments.add(fragment)
                fragments.add(fragment.translate(_URL_SAFE))
    return fragments


_URL_SAFE = str.maketrans("+/", "-_")


class Redactor:
    """Replaces secrets (and ``fal_webhook`` query values) in text and JSON values.

    A secret is found in every form it can take in a recording: as is, in any letter case,
    percent-encoded (wholly or in part, ``%XX`` in either case, or twice), and inside base64
    (standard or URL-safe, whatever the alignment of the text around it).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        spelled: list[tuple[int, str]] = []
        fragments: set[str] = set()
        for secret in set(secrets):
            if len(secret) < _MIN_FRAGMENT:
                continue
            spelled.append((len(secret), f"(?i:{_spelled(secret)})"))
            fragments |= _base64_fragments(secret)
        alternatives = spelled + [(len(f), re.escape(f)) for f in fragments]
        alternatives.sort(key=lambda item: item[0], reverse=True)  # longest first
        self._pattern = re.compile("|".join(p for _, p in alternatives)) if alternatives else None
        #: The longest text a secret can take (each character percent-encoded twice: ``%25XX``).
        self.span = 5 * 4 * max((n for n, _ in spelled), default=0)

    def found_in(self, text: str) -> bool:
        """Whether ``text`` carries a secret in any form (not counting ``fal_webhook`` values)."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def text(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _WEBHOOK_QUERY.sub(r"\1" + REDACTED, text)

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string (dictionary keys too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        return value


@functools.lru_cache(maxsize=64)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """``text`` with ``secrets`` (in every form) and ``fal_webhook`` query values replaced."""
    return _redactor(tuple(secrets)).text(text)


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """A copy of a JSON value with secrets and ``fal_webhook`` query values replaced."""
    return _redactor(tuple(secrets)).value(value)


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    """A copy of a parsed query string with credentials (``fal_jwt_token``) replaced."""
    return {key: REDACTED if key in SECRET_QUERY else value for key, value in query.items()}
