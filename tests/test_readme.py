"""Every ```python block of README.md runs as written, so no snippet can rot.

- Blocks that define ``test_*`` functions are test files: they run through ``pytester``, all in
  one inner run, and every test in them must pass.
- The test block of the "Record and replay" section is recorded against a second mock playing
  fal.ai (``--fal-upstream``), then replayed offline from the file it wrote.
- A block that needs Node (it runs an ``.mjs`` file) runs in its own inner run, next to the
  ```js block whose first line is ``// <name>.mjs``; it skips without Node outside CI, like
  ``test_js_client.py``.
- Every other block is executed with ``exec``.

Failures name the block by its README line and section. The test files keep the README's line
numbers (they are padded with blank lines), so a traceback points at the README line.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from inner_runs import QUIET

from pytest_falmock import FalMock

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
RECORD_SECTION = "Record and replay"
FENCE = re.compile(r"^```(\S*)\s*$")
DOCS = ("README.md", "docs/wire.md", "bench/README.md", "CONTRIBUTING.md", "CHANGELOG.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")
JS_FILE = re.compile(r"^// (\S+\.mjs)$")


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # README line of the first code line
    section: str
    code: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.section})"

    @property
    def tests(self) -> list[str]:
        tree = ast.parse(self.code)
        return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]

    @property
    def file_name(self) -> str:
        return f"test_readme_line_{self.line}.py"

    def padded(self) -> str:
        """The code with README line numbers."""
        return "\n" * (self.line - 1) + self.code


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    section = "top"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{i + 1}: a code fence is never closed"
        found.append(Block(fence.group(1), i + 2, section, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return found


BLOCKS = blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.language == "python"]
JS_FILES = {
    m.group(1): b for b in BLOCKS if b.language == "js" and (m := JS_FILE.match(b.code.split("\n")[0]))
}


def _needs_node(block: Block) -> bool:
    return any(name in block.code for name in JS_FILES)


def _parses(block: Block) -> list[str]:
    try:
        return block.tests
    except SyntaxError as exc:
        pytest.fail(f"{block.name}: not valid Python: {exc}", pytrace=False)


TEST_BLOCKS = [b for b in PYTHON if _parses(b)]
RECORD_BLOCKS = [b for b in TEST_BLOCKS if b.section == RECORD_SECTION]
NODE_BLOCKS = [b for b in TEST_BLOCKS if _needs_node(b) and b not in RECORD_BLOCKS]
PLAIN_TEST_BLOCKS = [b for b in TEST_BLOCKS if b not in RECORD_BLOCKS and b not in NODE_BLOCKS]
EXEC_BLOCKS = [b for b in PYTHON if b not in TEST_BLOCKS]


def _block_of(by_file: dict[str, Block], nodeid: str) -> Block:
    return by_file[nodeid.split("::")[0]]


def _run(pytester: pytest.Pytester, group: list[Block], *args: str) -> None:
    """Run ``group`` as test files in one inner run; every test must pass, by README block."""
    for block in group:
        (pytester.path / block.file_name).write_text(block.padded(), encoding="utf-8")
    by_file = {block.file_name: block for block in group}
    reprec = pytester.inline_run(*QUIET, *args, *by_file)
    problems = [
        f"{_block_of(by_file, r.nodeid).name}: could not be collected:\n{r.longrepr}"
        for r in reprec.getfailedcollections()
    ]
    passed, skipped, failed = reprec.listoutcomes()
    for report in [*failed, *skipped]:
        block = _block_of(by_file, report.nodeid)
        problems.append(f"{block.name}: {report.nodeid} {report.outcome}:\n{report.longrepr}")
    expected = sorted(f"{b.file_name}::{t}" for b in group for t in b.tests)
    assert not problems, "README examples failed:\n\n" + "\n\n".join(problems)
    assert sorted(r.nodeid for r in passed) == expected


def test_every_python_block_is_run() -> None:
    """Nothing falls between the cracks: each ```python block is run by one test below."""
    sorts = [TEST_BLOCKS, EXEC_BLOCKS]
    assert sorted(b.line for group in sorts for b in group) == [b.line for b in PYTHON]
    assert PYTHON, "README.md has no ```python block"
    unknown = [b.name for b in BLOCKS if b.language in ("py", "python3", "pycon", "pytest")]
    assert not unknown, f"write ```python (so tests/test_readme.py runs them): {unknown}"
    assert len(RECORD_BLOCKS) == 1, f"the {RECORD_SECTION!r} section needs exactly one test block"


def test_the_quick_start_comes_first() -> None:
    assert PYTHON[0].section == "Quick start"
    assert PYTHON[0].tests == ["test_cat"]


def test_readme_test_blocks_pass(pytester: pytest.Pytester) -> None:
    _run(pytester, PLAIN_TEST_BLOCKS)


def test_readme_node_blocks_pass(pytester: pytest.Pytester) -> None:
    reason = None
    if shutil.which("node") is None:
        reason = "node is not on PATH"
    elif not (NODE_MODULES / "@fal-ai" / "client").is_dir():
        reason = "tests/js/node_modules is missing (run `npm ci --prefix tests/js`)"
    if reason is not None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"the README's Node example must run in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    for name, block in JS_FILES.items():
        (pytester.path / name).write_text(block.code, encoding="utf-8")
    (pytester.path / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    _run(pytester, NODE_BLOCKS)


def test_readme_record_block_records_then_replays(pytester: pytest.Pytester) -> None:
    (block,) = RECORD_BLOCKS
    target = pytester.path / "fal.json"
    with FalMock() as fal_ai:  # plays fal.ai for the recording
        fal_ai.on_run(re.compile("."), {"text": "recorded"})
        _run(pytester, [block], "--fal-record", f"--fal-upstream={fal_ai.url}", f"--fal-fixtures={target}")
        recorded = [r for r in fal_ai.requests if r.route in ("run", "queue.submit")]
    assert recorded, f"{block.name}: recording sent nothing upstream"
    entries: list[Any] = json.loads(target.read_text(encoding="utf-8"))["fixtures"]
    assert len(entries) == len(recorded)
    _run(pytester, [block], f"--fal-fixtures={target}")  # replay: the upstream is gone


@pytest.mark.parametrize("block", EXEC_BLOCKS, ids=[b.name for b in EXEC_BLOCKS])
def test_readme_block_runs(block: Block) -> None:
    try:
        exec(compile(block.padded(), str(README), "exec"), {"__name__": "readme_block"})
    except Exception as exc:
        raise AssertionError(f"{block.name} failed: {exc!r}") from exc


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (code blocks skipped)."""
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc: str) -> None:
    """Links between the docs (and to their headings) point at something that exists."""
    source = ROOT / doc
    broken = []
    for target in LINK.findall(source.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        path = (source.parent / file_part).resolve() if file_part else source
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in _anchors(path)):
            broken.append(target)
    assert broken == [], f"{doc}: broken links {broken}"
