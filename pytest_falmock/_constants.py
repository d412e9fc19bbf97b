"""fal.ai's own words, defined once."""

from __future__ import annotations

from typing import Final

IN_QUEUE: Final = "IN_QUEUE"
IN_PROGRESS: Final = "IN_PROGRESS"
COMPLETED: Final = "COMPLETED"

CANCELLED_MESSAGE: Final = "Request was cancelled"
CANCELLED_ERROR_TYPE: Final = "request_cancelled"

REQUEST_TIMEOUT_MESSAGE: Final = "Request timed out"
REQUEST_TIMEOUT_ERROR_TYPE: Final = "request_timeout"

REQUEST_ID_HEADER: Final = "x-fal-request-id"
#: ``start_timeout=T`` of both clients: seconds the request may wait before it starts.
REQUEST_TIMEOUT_HEADER: Final = "x-fal-request-timeout"
#: On a 504 that ends a start timeout (``user``): the clients never retry it.
REQUEST_TIMEOUT_TYPE_HEADER: Final = "X-Fal-Request-Timeout-Type"
ERROR_TYPE_HEADER: Final = "x-fal-error-type"
TARGET_URL_HEADER: Final = "x-fal-target-url"
TARGET_HOST_HEADER: Final = "x-fal-target-host"

#: The dummy key the plugin puts in ``FAL_KEY`` while a test runs, in the ``<key_id>:<key_secret>``
#: form the ``fal`` package's auth insists on (``fal_client`` takes any string).
DUMMY_FAL_KEY_ID: Final = "falmock-dummy-id"
DUMMY_FAL_KEY_SECRET: Final = "falmock-dummy-secret"
DUMMY_FAL_KEY: Final = f"{DUMMY_FAL_KEY_ID}:{DUMMY_FAL_KEY_SECRET}"

#: Endpoint-id namespaces that take one extra path segment (``workflows/owner/app``).
NAMESPACES: Final = frozenset({"workflows", "comfy"})

#: fal hosts, by the service they stand for.
QUEUE_HOSTS: Final = frozenset({"queue.fal.run", "queue.falrun.com"})
RUN_HOSTS: Final = frozenset({"fal.run", "falrun.com"})
REST_HOSTS: Final = frozenset({"rest.fal.ai", "rest.alpha.fal.ai"})
CDN_HOSTS: Final = frozenset({"v3.fal.media", "v3b.fal.media", "fal.media"})
FAL_HOSTS: Final = QUEUE_HOSTS | RUN_HOSTS | REST_HOSTS | CDN_HOSTS

REDACTED: Final = "[REDACTED]"
