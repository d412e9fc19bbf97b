"""The fixture-file writer: atomic, locked, stable; safe with several processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pytest_falmock._fixture_files import load_file
from pytest_falmock._recording_file import FixtureWriter
from pytest_falmock._secrets import redact

WRITER = """
import sys, time
from pathlib import Path
from pytest_falmock._recording_file import FixtureWriter

path, name, count, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
writer = FixtureWriter(path)
while time.time() < start:
    time.sleep(0.001)
for i in range(count):
    entry = {"match": {"model": f"w/{name}", "input": {"i": i}}, "response": {"json": {"by": name, "i": i}}}
    writer.save(entry, replace=False)
"""


def entry(model: str, value: Any) -> dict[str, Any]:
    return {"match": {"endpoint": "fal", "model": model}, "response": {"json": value}}


def test_processes_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    target = tmp_path / "fal.json"
    start = time.time() + 0.5
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), f"p{n}", "15", str(start)])
        for n in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    document = json.loads(target.read_text())
    seen = sorted((e["response"]["json"]["by"], e["response"]["json"]["i"]) for e in document["fixtures"])
    assert seen == sorted((f"p{n}", i) for n in range(4) for i in range(15))
    assert len(load_file(target)) == 60
    assert not list(tmp_path.glob("*.tmp"))
    for name in (f"p{n}" for n in range(4)):  # each writer's own entries stay in its order
        mine = [
            e["response"]["json"]["i"] for e in document["fixtures"] if e["response"]["json"]["by"] == name
        ]
        assert mine == list(range(15))


def test_new_keeps_an_existing_match_and_all_replaces_it_in_place(tmp_path: Path) -> None:
    target = tmp_path / "fal.json"
    target.write_text(json.dumps({"note": "kept", "fixtures": [entry("a", 1), entry("b", 2)]}))
    writer = FixtureWriter(target)
    writer.save(entry("a", "new"), replace=False)
    assert json.loads(target.read_text())["fixtures"] == [entry("a", 1), entry("b", 2)]
    writer.save(entry("a", "new"), replace=True)
    writer.save(entry("c", 3), replace=True)
    assert json.loads(target.read_text()) == {
        "note": "kept",
        "fixtures": [entry("a", "new"), entry("b", 2), entry("c", 3)],
    }
    assert writer.find(entry("b", 0)["match"]) == entry("b", 2)
    assert writer.find({"model": "zzz"}) is None


def test_missing_directories_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "fal.json"
    FixtureWriter(target).save(entry("m", {"é": "ü"}), replace=False)
    assert (
        target.read_text(encoding="utf-8")
        == json.dumps({"fixtures": [entry("m", {"é": "ü"})]}, indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
    )


def test_redact_replaces_secrets_and_webhook_query_values() -> None:
    value = {
        "a": "Key abc-secret-123 and more",
        "list": ["https://x/?fal_webhook=https://h/cb?t=1&b=2", 3, None],
        "abc-secret-123": True,
    }
    assert redact(value, ["abc-secret-123"]) == {
        "a": "Key [REDACTED] and more",
        "list": ["https://x/?fal_webhook=[REDACTED]&b=2", 3, None],
        "[REDACTED]": True,
    }
