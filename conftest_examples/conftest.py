"""Example conftest.py: copy what you need into your own project.

pytest-falmock needs no conftest at all - installing it gives every test the ``fal_mock``
fixture. A conftest is where you put responses many tests share.
"""

from __future__ import annotations

import re

import pytest

from pytest_falmock import FalMock


@pytest.fixture
def flux(fal_mock: FalMock) -> FalMock:
    """Tests that ask for ``flux`` get an image response for any flux model."""
    fal_mock.on_image(re.compile(r"^fal-ai/flux"), {"images": [{"url": "https://example.com/cat.png"}]})
    return fal_mock
