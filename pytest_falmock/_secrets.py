"""Secrets: the fal key found at start-up, and keeping it (and webhook URLs) out of what is written."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

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


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    """A copy of a parsed query string with credentials (``fal_jwt_token``) replaced."""
    return {key: REDACTED if key in SECRET_QUERY else value for key, value in query.items()}
