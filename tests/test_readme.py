"""The README's opening examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from inner_runs import QUIET

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_quick_start_passes(pytester: pytest.Pytester) -> None:
    quick_start = PYTHON_BLOCKS[0]
    assert "def test_cat(fal_mock):" in quick_start
    pytester.makepyfile(test_quick_start=quick_start)
    pytester.runpytest(*QUIET).assert_outcomes(passed=1)


def test_falmock_without_pytest_snippet_runs() -> None:
    snippet = next(block for block in PYTHON_BLOCKS if block.startswith("from pytest_falmock import FalMock"))
    exec(compile(snippet, "README.md", "exec"), {})
