"""Signed webhooks: an app's own verifier, written as fal documents it with ``cryptography``,
accepts the mock's deliveries against ``fal_mock.webhook_jwks_url`` and rejects tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any, Callable, Mapping, Optional

import fal_client
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from httpclient import http
from pytest_httpserver import HTTPServer

from pytest_falmock import FalMock

FLUX = "fal-ai/flux/dev"
SKEW = 300
Http = Callable[..., Any]


# -- the app's verifier (what a receiver of fal's webhooks runs) ----------------------------------
def fetch_jwks(url: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = http("GET", url).json["keys"]
    return keys


def verify(
    keys: list[dict[str, Any]], headers: Mapping[str, str], body: bytes, now: Optional[float] = None
) -> bool:
    """fal's documented check: timestamp within 300 s, Ed25519 over the four lines, any JWKS key."""
    request_id = headers["X-Fal-Webhook-Request-Id"]
    user_id = headers["X-Fal-Webhook-User-Id"]
    timestamp = headers["X-Fal-Webhook-Timestamp"]
    signature = bytes.fromhex(headers["X-Fal-Webhook-Signature"])
    if abs((time.time() if now is None else now) - int(timestamp)) > SKEW:
        return False
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    for key in keys:
        if (key.get("kty"), key.get("crv")) != ("OKP", "Ed25519"):
            continue
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def delivered(mock: FalMock, server: HTTPServer) -> tuple[dict[str, str], bytes]:
    """The headers and raw body of the one webhook the receiver got."""
    assert [d.outcome for d in mock.webhooks] == ["delivered"]
    ((request, _),) = server.log
    return dict(request.headers), request.get_data()


def test_the_apps_verifier_accepts_the_mocks_webhook(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"images": []})

    handle = fal_client.submit(FLUX, {"prompt": "cat"}, webhook_url=receiver.url_for("/hook"))

    headers, body = delivered(fal_mock, receiver)
    keys = fetch_jwks(fal_mock.webhook_jwks_url)
    assert verify(keys, headers, body)
    assert headers["X-Fal-Webhook-Request-Id"] == handle.request_id
    assert headers["X-Fal-Webhook-User-Id"]
    assert abs(time.time() - int(headers["X-Fal-Webhook-Timestamp"])) < SKEW
    assert len(bytes.fromhex(headers["X-Fal-Webhook-Signature"])) == 64
    (delivery,) = fal_mock.webhooks
    assert delivery.data == body
    assert {k: v for k, v in delivery.headers.items() if k.startswith("X-Fal-Webhook")} == {
        k: v for k, v in headers.items() if k.startswith("X-Fal-Webhook")
    }
    assert json.loads(body)["payload"] == {"images": []}


def test_a_tampered_body_or_header_is_rejected(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"images": [], "seed": 1})
    fal_client.submit(FLUX, {"prompt": "cat"}, webhook_url=receiver.url_for("/hook"))
    headers, body = delivered(fal_mock, receiver)
    keys = fetch_jwks(fal_mock.webhook_jwks_url)

    assert verify(keys, headers, body)
    assert not verify(keys, headers, body.replace(b'"seed": 1', b'"seed": 2'))
    assert not verify(keys, headers, body + b" ")
    assert not verify(keys, {**headers, "X-Fal-Webhook-Request-Id": "another-request"}, body)
    assert not verify(keys, {**headers, "X-Fal-Webhook-User-Id": "someone-else"}, body)
    with FalMock() as other:  # every mock makes its own key
        assert not verify(fetch_jwks(other.webhook_jwks_url), headers, body)


def test_the_timestamp_skew_rule(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"images": []})
    fal_client.submit(FLUX, {"prompt": "cat"}, webhook_url=receiver.url_for("/hook"))
    headers, body = delivered(fal_mock, receiver)
    keys = fetch_jwks(fal_mock.webhook_jwks_url)
    stamp = int(headers["X-Fal-Webhook-Timestamp"])

    assert verify(keys, headers, body, now=stamp + SKEW)
    assert verify(keys, headers, body, now=stamp - SKEW)
    assert not verify(keys, headers, body, now=stamp + SKEW + 1)
    assert not verify(keys, headers, body, now=stamp - SKEW - 1)
    old = {**headers, "X-Fal-Webhook-Timestamp": str(stamp - SKEW - 1)}
    assert not verify(keys, old, body, now=stamp)


def test_error_webhooks_are_signed_in_fals_shape(fal_mock: FalMock, receiver: HTTPServer) -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]
    fal_mock.on_error(FLUX, status=422, detail=detail)

    handle = fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/hook"))

    headers, body = delivered(fal_mock, receiver)
    assert verify(fetch_jwks(fal_mock.webhook_jwks_url), headers, body)
    assert json.loads(body) == {
        "request_id": handle.request_id,
        "gateway_request_id": handle.request_id,
        "status": "ERROR",
        "error": "Invalid status code: 422",
        "payload": {"detail": detail},
    }


def test_a_payload_that_is_not_json_is_sent_as_null_with_payload_error(
    fal_mock: FalMock, receiver: HTTPServer, call: Http
) -> None:
    fal_mock.on_image(FLUX, {"images": [{}]})  # echoes the request's prompt into the result
    url = f"{fal_mock.url}/queue/{FLUX}?fal_webhook={receiver.url_for('/hook')}"

    submitted = call("POST", url, raw=b'{"prompt": NaN}', headers={"Content-Type": "application/json"})

    assert submitted.status == 200
    headers, body = delivered(fal_mock, receiver)
    assert verify(fetch_jwks(fal_mock.webhook_jwks_url), headers, body)
    sent = json.loads(body)
    assert sent["status"] == "OK"
    assert sent["payload"] is None
    assert sent["payload_error"].startswith("Payload is not valid JSON: ")
    assert set(sent) == {"request_id", "gateway_request_id", "status", "payload", "payload_error"}


def test_the_jwks_is_served_on_every_wire_form(fal_mock: FalMock, call: Http) -> None:
    by_path = call("GET", fal_mock.webhook_jwks_url)
    by_host = call(
        "GET", f"{fal_mock.url}/.well-known/jwks.json", headers={"x-fal-target-host": "rest.fal.ai"}
    )
    by_url = call(
        "GET", fal_mock.url, headers={"x-fal-target-url": "https://rest.fal.ai/.well-known/jwks.json"}
    )

    assert fal_mock.webhook_jwks_url == f"{fal_mock.url}/rest/.well-known/jwks.json"
    assert by_path.status == by_host.status == by_url.status == 200
    assert by_path.json == by_host.json == by_url.json
    (key,) = by_path.json["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32
    assert "d" not in key  # never the private part
    assert [r.route for r in fal_mock.requests] == ["webhook.jwks"] * 3
    assert call("POST", fal_mock.webhook_jwks_url, {}).status == 405
