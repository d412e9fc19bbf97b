"""Outgoing HTTP (webhook deliveries, recording upstream): one loopback rule, one way to open."""

from __future__ import annotations

import ipaddress
import urllib.request
from typing import Any
from urllib.parse import urlsplit


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is returned as an ``HTTPError``, never followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


#: Never through an HTTP proxy (a proxy would see loopback traffic, or refuse it).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: The environment's proxies apply (talking to the real fal.ai from behind a corporate proxy).
_PROXIED = urllib.request.build_opener()
_DIRECT_ONLY = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
_PROXIED_ONLY = urllib.request.build_opener(_NoRedirect)


def is_loopback(url: str) -> bool:
    """True for ``localhost`` and loopback address literals (``127.0.0.0/8``, ``::1``)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_url(request: urllib.request.Request, timeout: float, *, follow_redirects: bool = True) -> Any:
    """Open ``request``: loopback URLs directly, others through the environment's proxies.

    With ``follow_redirects=False`` a 3xx answer raises ``HTTPError`` instead of being followed.
    """
    if follow_redirects:
        opener = _DIRECT if is_loopback(request.full_url) else _PROXIED
    else:
        opener = _DIRECT_ONLY if is_loopback(request.full_url) else _PROXIED_ONLY
    return opener.open(request, timeout=timeout)
