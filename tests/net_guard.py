"""A network guard for inner pytest runs and child processes: proof that nothing leaves the machine.

``SOURCE`` is Python to put at the top of an inner ``conftest.py`` (or a child script). It
replaces ``socket.getaddrinfo`` and ``socket.socket.connect`` so that a name lookup of, or a
connection to, anything but a loopback address raises :class:`NonLoopbackAttempt` - a
``RuntimeError``, which no HTTP client takes for a network error it could retry - and is
written down; :func:`attempts` reads what an inner run tried.
"""

from __future__ import annotations

import json
from pathlib import Path

SOURCE = """
import ipaddress as _ipaddress
import socket as _socket

NON_LOOPBACK_ATTEMPTS = []


class NonLoopbackAttempt(RuntimeError):
    pass


def _is_loopback(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return _ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _refuse(what):
    NON_LOOPBACK_ATTEMPTS.append(what)
    raise NonLoopbackAttempt(f"non-loopback network use attempted: {what}")


_real_getaddrinfo = _socket.getaddrinfo
_real_connect = _socket.socket.connect
_real_connect_ex = _socket.socket.connect_ex


def _getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback(host):
        _refuse(f"name lookup {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _connect(self, address):
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        _refuse(f"connect {address[0]}:{address[1]}")
    return _real_connect(self, address)


def _connect_ex(self, address):
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        _refuse(f"connect {address[0]}:{address[1]}")
    return _real_connect_ex(self, address)


_socket.getaddrinfo = _getaddrinfo
_socket.socket.connect = _connect
_socket.socket.connect_ex = _connect_ex


def _restore_network():
    _socket.getaddrinfo = _real_getaddrinfo
    _socket.socket.connect = _real_connect
    _socket.socket.connect_ex = _real_connect_ex
"""

#: Appended to ``SOURCE`` in an inner conftest: restore the socket module and write down what
#: was attempted (read it back with :func:`attempts`).
CONFTEST_HOOKS = """

def pytest_unconfigure(config):
    import json as _json

    _restore_network()
    (config.rootpath / "non_loopback_attempts.json").write_text(_json.dumps(NON_LOOPBACK_ATTEMPTS))
"""

CONFTEST = SOURCE + CONFTEST_HOOKS


def attempts(root: Path) -> list[str]:
    """What the inner run rooted at ``root`` tried to reach besides loopback."""
    found: list[str] = json.loads((root / "non_loopback_attempts.json").read_text())
    return found
