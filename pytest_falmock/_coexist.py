"""Living next to other HTTP mocks in one test: the only module that knows their APIs.

pytest-httpx (0.33+) mocks every httpx request of a test that uses ``httpx_mock``, including
``fal_client``'s requests to the mock. Its ``httpx_mock`` marker takes ``should_mock``; a test
that uses both fixtures gets one more (closest) such marker that keeps the user's choice for
every other request and lets requests to a running fal mock through. respx has no such hook:
``respx_mock.route(url__startswith=fal_mock.url).pass_through()`` is the documented line.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest

from ._versions import installed_version

#: pytest-httpx versions whose ``httpx_mock`` marker takes ``should_mock``.
SHOULD_MOCK_SINCE = (0, 33)


def spare_fal_mock(items: list[pytest.Item], base_url: Callable[[], Optional[str]]) -> None:
    """Tests using both ``httpx_mock`` and ``fal_mock``: pytest-httpx leaves the requests to the
    running mock alone (``base_url()``: its root, asked per request; None while none runs)."""
    both = [
        item
        for item in items
        if "httpx_mock" in getattr(item, "fixturenames", ())
        and "fal_mock" in getattr(item, "fixturenames", ())
    ]
    if not both:
        return
    version = installed_version("pytest-httpx", 2)
    if version is None or version < SHOULD_MOCK_SINCE:
        return
    for item in both:
        users: Optional[Callable[[Any], bool]] = None
        for marker in item.iter_markers("httpx_mock"):  # closest first, like pytest-httpx
            if "should_mock" in marker.kwargs:
                users = marker.kwargs["should_mock"]
                break

        def should_mock(request: Any, users: Optional[Callable[[Any], bool]] = users) -> bool:
            url = request.url  # an httpx.URL
            if f"{url.scheme}://{url.host}:{url.port}" == base_url():
                return False
            return True if users is None else bool(users(request))

        item.add_marker(pytest.mark.httpx_mock(should_mock=should_mock), append=False)
