"""Every URL the mock hands out, built in one place: the inverse of :mod:`._routing`.

Routing reads paths under :data:`PREFIX` (and :data:`CONTROL_PREFIX`); everything that writes
one (submit envelopes, file URLs, the CDN base, the ``fal_client`` redirect) asks this module.
"""

from __future__ import annotations

from typing import Final, Literal
from urllib.parse import quote

from ._constants import NAMESPACES

#: Prefix of every fal route served by the mock (what ``withProxy({targetUrl})`` points at).
PREFIX: Final = "/fal"
#: Prefix of the control API.
CONTROL_PREFIX: Final = "/__falmock/"

#: The fal services, as the first path segment after :data:`PREFIX`.
Service = Literal["queue", "run", "rest", "cdn", "files"]
SERVICES: Final[tuple[Service, ...]] = ("queue", "run", "rest", "cdn", "files")
#: First segment under ``/fal/files/`` of generated media (never a file id: those are hex).
GENERATED: Final = "generated"
#: Segment after a file URL that starts a multipart upload's URLs.
MULTIPART: Final = "multipart"


def app_path(model: str) -> str:
    """``fal-ai/flux/dev`` -> ``fal-ai/flux``; ``workflows/o/a/x`` -> ``workflows/o/a``.

    The same owner/alias rule the real clients use when they build status URLs.
    """
    parts = model.split("/")
    keep = 3 if parts[0] in NAMESPACES else 2
    return "/".join(parts[:keep])


def proxy_url(base_url: str) -> str:
    """``http://127.0.0.1:<port>/fal``: the proxy base (``withProxy({targetUrl})``)."""
    return base_url + PREFIX


def proxy_root(url: str) -> str:
    """The server root behind a proxy base (``http://h:p/fal`` -> ``http://h:p``); a root is kept."""
    url = url.rstrip("/")
    return url[: -len(PREFIX)] if url.endswith(PREFIX) else url


def service_url(base_url: str, service: Service) -> str:
    """``http://127.0.0.1:<port>/fal/<service>`` (no trailing slash)."""
    return f"{base_url}{PREFIX}/{service}"


def websocket_url(base_url: str) -> str:
    """The ``ws://`` twin of the run service (where realtime connections go)."""
    return service_url(base_url, "run").replace("http", "ws", 1)


def job_url(base_url: str, model: str, request_id: str) -> str:
    """A queue job's result URL; ``/status`` and ``/cancel`` are appended to it."""
    return f"{service_url(base_url, 'queue')}/{app_path(model)}/requests/{request_id}"


def file_url(base_url: str, file_id: str, name: str) -> str:
    """Where a stored file is served (and, for the storage flow, uploaded with ``PUT``); the name
    is percent-encoded (routing decodes the path back to it)."""
    return f"{service_url(base_url, 'files')}/{file_id}/{quote(name, safe='')}"


def jwks_url(base_url: str) -> str:
    """Where the webhook signing keys are published (fal's ``https://rest.fal.ai/.well-known/jwks.json``)."""
    return f"{service_url(base_url, 'rest')}/.well-known/jwks.json"


def generated_url(base_url: str, spec: str, name: str) -> str:
    """Where generated media is served: ``.../fal/files/generated/<spec>/<name>``."""
    return f"{service_url(base_url, 'files')}/{GENERATED}/{spec}/{name}"


def multipart_url(file_url: str, upload_id: str) -> str:
    """The base of a multipart upload's part (``/<n>``) and ``/complete`` URLs."""
    return f"{file_url}/{MULTIPART}/{upload_id}"


def control_url(base_url: str, name: str) -> str:
    return f"{base_url}{CONTROL_PREFIX}{name}"
