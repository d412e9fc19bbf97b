"""What a redirect changes in ``fal_client`` (``fal_client.client``), verified on 0.5 - 1.0.3.

The URL constants of ``fal_client.client`` are read at call time: pointing them at a server
redirects runs, queue calls, streams, uploads (REST token, CDN) and realtime (token, WebSocket).
In a test, the executor is tracked, the mock-bound sync client is kept for the next test of the
same mock, and with the mock's clock the module's ``time``/``asyncio`` waits are virtual
(``_clients/_virtual_time.py``).
The credential lookups the module imported (``fetch_auth_credentials`` and friends) answer the
redirect's key, so no lookup ever reads a login token or refreshes one over the network; the
cached ``_auth``/``_client``/``_token_manager`` of the module-level clients are dropped so they
are rebuilt against the patched values.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

from .._constants import DUMMY_FAL_KEY
from .._urls import service_url, websocket_url
from .._versions import installed_version

if TYPE_CHECKING:
    from types import ModuleType

    from ._patches import Patches
    from ._redirect import Target

NAME = "fal_client.client"
PACKAGE = "fal_client"
DISTRIBUTION = "fal-client"
REQUIRED = ("RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "CDN_URL", "REALTIME_URL_FORMAT")
#: ``REST_URL`` (uploads, realtime tokens) exists from this version on.
REST_URL_SINCE = (0, 5, 9)
CACHED = ("_auth", "_client", "_token_manager")
#: What the module-level sync client keeps from one test to the next of the same mock: its
#: httpx client costs an SSL context (~10 ms) to build. Async clients are bound to their event
#: loop, and the CDN token manager would hide the next test's token request: both are rebuilt.
KEPT = ("_auth", "_client")
#: ``id(fal_client.sync_client)`` -> (the mock's URL, its mock-bound cached values).
_kept: dict[int, tuple[str, dict[str, Any]]] = {}


def urls(base_url: str, module: ModuleType) -> dict[str, str]:
    """The constants of ``fal_client.client`` and where they point under a redirect."""
    targets = {
        "RUN_URL_FORMAT": service_url(base_url, "run") + "/",
        "QUEUE_URL_FORMAT": service_url(base_url, "queue") + "/",
        "CDN_URL": service_url(base_url, "cdn"),
        "REALTIME_URL_FORMAT": websocket_url(base_url) + "/",
    }
    if hasattr(module, "REST_URL"):
        targets["REST_URL"] = service_url(base_url, "rest")
    if hasattr(module, "FAL_CDN_FALLBACK_URL"):  # 0.x: the legacy CDN
        targets["FAL_CDN_FALLBACK_URL"] = service_url(base_url, "cdn")
    return targets


def redirect(module: ModuleType, target: Target, patches: Patches) -> None:
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if not hasattr(module, "REST_URL") and (installed_version(DISTRIBUTION) or (0,)) >= REST_URL_SINCE:
        missing.append("REST_URL")
    if missing:
        raise target.missing(NAME, missing, PACKAGE, DISTRIBUTION)
    lookups = _credential_lookups(module, target.key)
    if not lookups:
        raise target.missing(NAME, ["fetch_auth_credentials"], PACKAGE, DISTRIBUTION)
    replacements: dict[str, Any] = {**urls(target.base_url, module), **lookups}
    from ._executor import TrackingExecutor, has_executor

    executor_here = has_executor(module)
    if target.virtual is not None:
        from ._virtual_time import missing_waits

        waits = missing_waits(module) + ([] if executor_here else ["EXECUTOR"])
        if waits:
            raise target.missing_waits(NAME, waits, PACKAGE, DISTRIBUTION)
        replacements.update(target.virtual.replacements(module))
    for name, value in replacements.items():
        patches.set(module, name, value)
    if target.per_test and executor_here:
        executor = TrackingExecutor(target.virtual)
        patches.set(module, "EXECUTOR", executor)
        patches.before_undo(executor.settle)  # while the mock still knows this test's jobs
    drop_cached()
    if target.per_test:
        base_url = target.base_url
        restore_kept(base_url)
        patches.after_undo(lambda: keep(base_url))
    patches.after_undo(drop_cached)  # never leave clients bound to a redirect behind


def _credential_lookups(module: ModuleType, key: Callable[[], str]) -> dict[str, Any]:
    credentials = getattr(sys.modules.get("fal_client.auth"), "AuthCredentials", None)

    def fetch_credentials(*args: Any, **kwargs: Any) -> str:
        return key()

    def fetch_auth_credentials(*args: Any, **kwargs: Any) -> Any:
        return credentials("Key", key()) if credentials is not None else None

    async def fetch_auth_credentials_async(*args: Any, **kwargs: Any) -> Any:
        return fetch_auth_credentials()

    lookups: dict[str, Any] = {"fetch_credentials": fetch_credentials}
    if credentials is not None:
        lookups["fetch_auth_credentials"] = fetch_auth_credentials
        lookups["fetch_auth_credentials_async"] = fetch_auth_credentials_async
    return {name: lookup for name, lookup in lookups.items() if hasattr(module, name)}


def drop_cached() -> None:
    """Forget the credentials and HTTP clients the module-level clients cached."""
    package = sys.modules.get("fal_client")
    for attr in ("sync_client", "async_client"):
        client = getattr(package, attr, None)
        state = getattr(client, "__dict__", None)
        if state is None:
            continue
        for cached in CACHED:
            state.pop(cached, None)


def keep(base_url: str) -> None:
    """Put the sync client's mock-bound cache aside for the next test of the mock at ``base_url``
    (only when it was built with the dummy key, never with a key the test set)."""
    client = getattr(sys.modules.get("fal_client"), "sync_client", None)
    state = getattr(client, "__dict__", {})
    if getattr(state.get("_auth"), "token", None) == DUMMY_FAL_KEY:
        _kept[id(client)] = (base_url, {name: state[name] for name in KEPT if name in state})


def restore_kept(base_url: str) -> None:
    """Give the sync client back what :func:`keep` put aside for this mock; close what was
    kept for a mock that is gone."""
    client = getattr(sys.modules.get("fal_client"), "sync_client", None)
    kept_for, values = _kept.pop(id(client), ("", {}))
    if kept_for == base_url and client is not None:
        client.__dict__.update(values)
    elif hasattr(values.get("_client"), "close"):
        values["_client"].close()
