"""``FAL_MOCK_URL``: point any Python process's fal clients at a mock, from interpreter start-up.

The package installs ``pytest_falmock.pth`` next to itself in ``site-packages``; its one line
imports this module only when ``FAL_MOCK_URL`` is set, and :func:`install` then only registers
a redirect: ``fal_client`` and ``fal`` are patched when the program imports them. With the
variable unset the cost is one environment lookup per interpreter start.

``FAL_MOCK_URL`` is a mock's proxy URL (``http://127.0.0.1:4005/fal``, what ``fal-mock`` prints
and ``fal_mock.url`` holds). The clients send the environment's key (``FAL_KEY``, or
``FAL_KEY_ID`` and ``FAL_KEY_SECRET``) to the mock and nowhere else, or a dummy key when there
is none: a recording mock adds the real key itself.
"""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping, Optional
from urllib.parse import urlsplit

from .._constants import DUMMY_FAL_KEY
from .._urls import proxy_root
from ._patches import LOOPBACK_HOSTS, no_proxy_value
from ._redirect import ClientRedirect, FalClientPatchError

VARIABLE = "FAL_MOCK_URL"
OPT_OUT = f"an unset {VARIABLE}"
#: The redirect :func:`install` applied in this process, if any.
installed: Optional[ClientRedirect] = None


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise FalClientPatchError(
            f"{VARIABLE}={url!r} is not a mock URL: expected the http(s) URL a mock serves fal "
            "under, e.g. http://127.0.0.1:4005/fal (what fal-mock prints). pytest-falmock refuses "
            "to let this process reach the real fal.ai; fix the URL or unset the variable."
        )
    return host


def install(environ: MutableMapping[str, str] = os.environ) -> Optional[ClientRedirect]:
    """Redirect the fal clients to ``FAL_MOCK_URL`` (called by the ``.pth`` line; idempotent)."""
    global installed
    url = environ.get(VARIABLE, "").strip()
    if not url or installed is not None:
        return installed

    def base_url() -> str:
        _host(url)  # a bad URL fails the client's import: the process never reaches fal.ai
        return proxy_root(url)

    try:
        hosts: tuple[str, ...] = (_host(url), *LOOPBACK_HOSTS)
    except FalClientPatchError:  # a bad URL fails later, at the client's import
        hosts = LOOPBACK_HOSTS
    if not environ.get("FAL_KEY") and not (environ.get("FAL_KEY_ID") and environ.get("FAL_KEY_SECRET")):
        environ["FAL_KEY"] = DUMMY_FAL_KEY  # for apps that check for a key themselves
    redirect = ClientRedirect(base_url, key=None, bypass=hosts, opt_out=OPT_OUT)
    redirect.apply()
    installed = redirect
    return redirect


def child_environment(mock_url: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables that send a child process's fal calls to the mock at ``mock_url``:
    ``FAL_MOCK_URL``, a dummy ``FAL_KEY`` and a ``NO_PROXY`` naming the mock's host."""
    hosts = (_host(mock_url), *LOOPBACK_HOSTS)
    return {
        VARIABLE: mock_url,
        "FAL_KEY": DUMMY_FAL_KEY,
        "NO_PROXY": no_proxy_value(environ.get("NO_PROXY", ""), hosts),
        "no_proxy": no_proxy_value(environ.get("no_proxy", ""), hosts),
    }
