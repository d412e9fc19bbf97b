"""Webhook signatures as fal makes them: an Ed25519 key per mock, and the JWKS that publishes it.

fal signs every webhook delivery with these headers::

    X-Fal-Webhook-Request-Id   the request id
    X-Fal-Webhook-User-Id      the account's user id
    X-Fal-Webhook-Timestamp    unix seconds
    X-Fal-Webhook-Signature    hex Ed25519 signature of
                               request_id \\n user_id \\n timestamp \\n sha256_hex(raw body)

and receivers verify them against ``GET https://rest.fal.ai/.well-known/jwks.json``
(``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": <base64url public key>, ...}]}``),
rejecting timestamps more than 300 s away. The key is made on first use (``cryptography``
is imported then, not when the plugin loads).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REQUEST_ID_HEADER = "X-Fal-Webhook-Request-Id"
USER_ID_HEADER = "X-Fal-Webhook-User-Id"
TIMESTAMP_HEADER = "X-Fal-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Fal-Webhook-Signature"
#: The user id the mock's deliveries carry (fal sends the account's).
WEBHOOK_USER_ID = "fal-mock-user"


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: the three header values and the body's SHA-256, one per line."""
    return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class WebhookSigner:
    """One Ed25519 key: signs deliveries (:meth:`headers`) and publishes itself (:meth:`jwks`)."""

    def __init__(self, user_id: str = WEBHOOK_USER_ID) -> None:
        self.user_id = user_id
        self._key: Optional[Ed25519PrivateKey] = None
        self._jwks: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()

    def _private_key(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

                self._key = Ed25519PrivateKey.generate()
            return self._key

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [<the public key as an OKP JWK>]}``."""
        if self._jwks is None:
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            public = self._private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            key = {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64url(public),
                "kid": hashlib.sha256(public).hexdigest()[:16],
                "use": "sig",
                "alg": "EdDSA",
            }
            self._jwks = {"keys": [key]}
        return {"keys": [dict(key) for key in self._jwks["keys"]]}

    def headers(self, request_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        """The four ``X-Fal-Webhook-*`` headers of one delivery of ``body``."""
        stamp = str(timestamp)
        signature = self._private_key().sign(signed_message(request_id, self.user_id, stamp, body))
        return {
            REQUEST_ID_HEADER: request_id,
            USER_ID_HEADER: self.user_id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature.hex(),
        }
