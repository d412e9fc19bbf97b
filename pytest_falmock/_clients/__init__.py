"""Client patching: the only package that knows the internals of the fal clients.

- :mod:`._redirect`: :class:`ClientRedirect` points every fal client module that is (or gets)
  imported at one server, and undoes it; redirects stack (the guard below, a test's mock above);
- :mod:`._fal_client` and :mod:`._fal_apps`: what a redirect changes in ``fal_client`` and in
  the ``fal`` package (``fal.apps``); each names what is missing when a client changes;
- :mod:`._imports`: the post-import hook, so a client is patched when it is imported, never
  imported by us;
- :mod:`._guard`: the loopback server that refuses fal calls made outside a mocked test;
- :mod:`._startup`: the interpreter start-up hook behind ``FAL_MOCK_URL`` (installed as a
  ``.pth`` file), and the environment that points a child process at a mock.

Importing this package (not ``_guard``) loads nothing but the standard library.
"""

from __future__ import annotations

from ._redirect import ClientRedirect, FalClientPatchError

__all__ = ["ClientRedirect", "FalClientPatchError"]
