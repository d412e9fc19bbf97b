"""Outgoing HTTP (webhook deliveries, recording upstream): one loopback rule, one way to open."""

from __future__ import annotations

import ipaddress
import urllib.request
from typing import Any
from urllib.parse import urlsplit

#: Never through an HTTP proxy (a proxy would see loopback traffic, or refuse it).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: The environment's proxies apply (talking to the real fal.ai from behind a corporate proxy).
_PROXIED = urllib.request.build_opener()


def is_loopback(url: str) -> bool:
    """True for ``localhost`` and loopback address literals (``127.0.0.0/8``, ``::1``)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_url(request: urllib.request.Request, timeout: float) -> Any:
    """Open ``request``: loopback URLs directly, others through the environment's proxies."""
    opener = _DIRECT if is_loopback(request.full_url) else _PROXIED
    return opener.open(request, timeout=timeout)
