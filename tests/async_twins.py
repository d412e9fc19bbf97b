"""Two tests from one async scenario: one under pytest-asyncio, one with plain ``asyncio.run``."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest

from pytest_falmock import FalMock

Scenario = Callable[[FalMock], Awaitable[None]]
TestFunction = Callable[..., Any]


def both_ways(scenario: Scenario, *marks: pytest.MarkDecorator) -> tuple[TestFunction, TestFunction]:
    """Two tests from one scenario: one under pytest-asyncio, one with plain ``asyncio.run``."""

    @pytest.mark.asyncio
    async def under_pytest_asyncio(fal_mock: FalMock) -> None:
        await scenario(fal_mock)

    def under_asyncio_run(fal_mock: FalMock) -> None:
        asyncio.run(scenario(fal_mock))

    tests: tuple[TestFunction, TestFunction] = (under_pytest_asyncio, under_asyncio_run)
    for mark in marks:
        tests = (mark(tests[0]), mark(tests[1]))
    return tests
