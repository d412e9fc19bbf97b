"""Webhook delivery: when a job with ``?fal_webhook=<url>`` completes, POST fal's webhook body.

Deliveries run on background threads, signed as fal signs them (:mod:`._signing`); only
loopback URLs (``localhost`` and loopback addresses) are contacted unless remote webhooks are
allowed, never for a submit another site's web page made (a page could otherwise make the
mock POST JSON to any local service), and redirects are never followed (a 3xx is the
delivery's status). Every attempt (or
refusal) is recorded in ``fal_mock.webhooks``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from ._constants import CANCELLED_MESSAGE
from ._jobs import Job
from ._journal import WebhookDelivery
from ._net import fetch, foreign_page, is_loopback
from ._settings import Settings
from ._signing import WebhookSigner
from ._stores import Stores

#: Seconds one delivery may take in all (connect, send, the answer's head).
DELIVERY_TIMEOUT = 5.0
#: How long reading ``fal_mock.webhooks`` (or a reset) waits for deliveries under way, in all.
DRAIN_TIMEOUT = 2 * DELIVERY_TIMEOUT + 1.0
#: Deliveries under way at once (one thread each); more are recorded as failed, not started.
MAX_IN_FLIGHT = 256


def page_refusal(headers: Mapping[str, str]) -> Optional[str]:
    """Why the webhook of a submit with these headers is not sent: another site's page made it
    (the mock would POST JSON, which that page cannot send itself, to a URL it picked)."""
    page = foreign_page(headers)
    return None if page is None else f"asked for by {page}: fal_mock sends no request for another site"


def webhook_body(job: Job) -> dict[str, Any]:
    """fal's webhook payload for a completed job.

    ``status`` is ``OK`` or ``ERROR`` (with ``error`` like ``"Invalid status code: 422"`` and
    the error body as ``payload``); a payload that is not valid JSON (e.g. a NaN the request
    put into it) is sent as ``null`` with ``payload_error`` saying why.
    """
    body: dict[str, Any] = {
        "request_id": job.request_id,
        "gateway_request_id": job.request_id,
        "status": "ERROR" if job.failed else "OK",
    }
    if job.cancelled:
        payload: Any = {"detail": CANCELLED_MESSAGE}
        body["error"] = CANCELLED_MESSAGE
    else:
        payload = job.result_body
        if job.failed:
            body["error"] = f"Invalid status code: {job.result_status}"
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        body["payload"] = None
        body["payload_error"] = f"Payload is not valid JSON: {exc}"
    else:
        body["payload"] = payload
    return body


class WebhookSender:
    """Delivers the webhooks of completed jobs; ``settings`` returns the mock's settings of the moment."""

    def __init__(
        self, stores: Stores, settings: Callable[[], Settings], signer: Optional[WebhookSigner] = None
    ) -> None:
        self._stores = stores
        self._settings = settings
        self.signer = signer if signer is not None else WebhookSigner()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def job_completed(self, job: Job) -> None:
        url = job.webhook_url
        if not url:
            return
        generation = self._stores.request_generation()  # a delivery outliving its test is dropped
        body = webhook_body(job)
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            self._stores.add_webhook(
                WebhookDelivery(
                    url, job.request_id, body, "failed", error=f"unsupported URL scheme {scheme!r}"
                )
            )
            return
        if job.webhook_refused is not None:
            self._stores.add_webhook(
                WebhookDelivery(url, job.request_id, body, "blocked", error=job.webhook_refused)
            )
            return
        if not self._settings().allow_remote_webhooks and not is_loopback(url):
            self._stores.add_webhook(
                WebhookDelivery(
                    url,
                    job.request_id,
                    body,
                    "blocked",
                    error="not a loopback URL; enable with @pytest.mark.fal_mock(allow_remote_webhooks=True)",
                )
            )
            return
        thread = threading.Thread(
            target=self._deliver,
            args=(url, job.request_id, body, generation),
            daemon=True,
            name="fal_mock-webhook",
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            busy = len(self._threads) >= MAX_IN_FLIGHT
            if not busy:
                self._threads.append(thread)
        if busy:
            error = f"{MAX_IN_FLIGHT} webhook deliveries were under way already; this one was not sent"
            self._stores.add_webhook(WebhookDelivery(url, job.request_id, body, "failed", error=error))
            return
        thread.start()

    def _deliver(self, url: str, request_id: str, body: dict[str, Any], generation: int) -> None:
        data = json.dumps(body).encode()
        signed = self.signer.headers(request_id, data, int(time.time()))  # wall time: receivers check it
        headers = {"Content-Type": "application/json", "User-Agent": "fal_mock-webhook", **signed}
        request = urllib.request.Request(url, data=data, method="POST", headers=headers)

        def sent(outcome: str, **result: Any) -> WebhookDelivery:
            return WebhookDelivery(url, request_id, body, outcome, headers=headers, data=data, **result)

        try:
            status, _, _ = fetch(request, DELIVERY_TIMEOUT, max_bytes=0)  # a 3xx is not followed
            delivery = sent("delivered", status_code=status)
        except Exception as exc:  # OSError, http.client.InvalidURL, ...: record it, never crash the thread
            delivery = sent("failed", error=f"{type(exc).__name__}: {exc}")
        self._stores.add_webhook(delivery, generation)

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait (``timeout`` in all) for deliveries under way, so ``fal_mock.webhooks`` is complete."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
