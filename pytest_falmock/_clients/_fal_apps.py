"""What a redirect changes in the ``fal`` package (``fal.apps``, fal 1.x).

``fal.apps`` builds its URLs from four format constants at call time, sends every request
through one ``lru_cache``d ``httpx.Client`` (which read the proxy environment when it was
built), and asks ``get_credentials()`` for the ``Authorization`` header - a lookup that reads
``~/.fal``, may call fal's REST API for a team, or refresh a login token. The redirect points
the constants at the server, answers ``get_credentials()`` with the redirect's key and rebuilds
the cached client on the way in and out; under virtual time its ``time.sleep`` (status polls,
retry backoff) advances the mock's clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .._urls import service_url, websocket_url

if TYPE_CHECKING:
    from types import ModuleType

    from ._patches import Patches
    from ._redirect import Target

NAME = "fal.apps"
PACKAGE = DISTRIBUTION = "fal"
#: The waits ``fal.apps`` makes (``iter_events`` polls, ``_get_with_retries`` backoff): ``time.sleep``.
WAITS = ("time",)
URL_FORMATS = ("_QUEUE_URL_FORMAT", "_STREAM_URL_FORMAT", "_REALTIME_URL_FORMAT", "_WS_URL_FORMAT")
REQUIRED = (*URL_FORMATS, "_get_http_client", "get_credentials")


class KeyCredentials:
    """What ``fal.apps`` needs of its credentials: the ``Key <id>:<secret>`` header."""

    def __init__(self, key: str) -> None:
        self._key = key

    def to_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}"}

    def __repr__(self) -> str:  # never print the key
        return "KeyCredentials(<fal_mock>)"


def urls(base_url: str) -> dict[str, str]:
    """The format constants of ``fal.apps`` and where they point under a redirect."""
    return {
        "_QUEUE_URL_FORMAT": service_url(base_url, "queue") + "/{app_id}",
        "_STREAM_URL_FORMAT": service_url(base_url, "run") + "/{app_id}",
        "_REALTIME_URL_FORMAT": websocket_url(base_url) + "/{app_id}",
        "_WS_URL_FORMAT": websocket_url(base_url) + "/{app_id}",
    }


def redirect(module: ModuleType, target: Target, patches: Patches) -> None:
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise target.missing(NAME, missing, PACKAGE, DISTRIBUTION)
    replacements: dict[str, Any] = urls(target.base_url)
    if target.virtual is not None:
        from ._virtual_time import missing_waits

        waits = missing_waits(module, WAITS)
        if waits:
            raise target.missing_waits(NAME, waits, PACKAGE, DISTRIBUTION)
        replacements.update(target.virtual.replacements(module, WAITS))
    key = target.key

    def get_credentials(*args: Any, **kwargs: Any) -> KeyCredentials:
        return KeyCredentials(key())

    for name, value in replacements.items():
        patches.set(module, name, value)
    patches.set(module, "get_credentials", get_credentials)
    clear: Callable[[], None] | None = getattr(module._get_http_client, "cache_clear", None)
    if clear is not None:
        clear()  # built before NO_PROXY named the server: it would send loopback to a proxy
        patches.after_undo(clear)
