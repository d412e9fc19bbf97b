"""Record & replay through the pytest options, in pytester runs against a fake fal upstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_fal_upstream import FakeFal
from inner_runs import QUIET, QUIET_WITH_XDIST

from pytest_falmock._constants import DUMMY_FAL_KEY

KEY = "fk-plugin-0123456789:plugin-secret-abcdefgh"

APP_TESTS = """
import json, os
import fal_client
import pytest

def save(name, value):
    with open(os.path.join(os.environ["OUT_DIR"], name + ".json"), "w") as f:
        json.dump(value, f)

def test_flux_image(fal_mock):
    save("flux", fal_client.subscribe("fal-ai/flux/dev", arguments={"prompt": "a cat"}))

def test_sync_run(fal_mock):
    save("run", fal_client.run("fal-ai/fast-sdxl", arguments={"prompt": "a tree"}))

def test_error(fal_mock):
    with pytest.raises(fal_client.client.FalClientHTTPError) as info:
        fal_client.subscribe("fake/error", arguments={"prompt": "too long"})
    save("error", [info.value.status_code, info.value.message])
"""


@pytest.fixture
def app(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.delenv("FAL_KEY_ID", raising=False)
    monkeypatch.delenv("FAL_KEY_SECRET", raising=False)
    monkeypatch.setenv("OUT_DIR", str(pytester.path))
    return pytester


def outputs(path: Path) -> dict[str, Any]:
    return {name: json.loads((path / f"{name}.json").read_text()) for name in ("flux", "run", "error")}


def entries(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["fixtures"])


def entry(model: str, prompt: str, body: Any) -> dict[str, Any]:
    return {
        "match": {"endpoint": "fal", "model": model, "input": {"prompt": prompt}},
        "response": {"json": body},
    }


def test_record_then_replay_image_job_sync_run_and_error(app: pytest.Pytester, fake: FakeFal) -> None:
    app.makepyfile(test_app=APP_TESTS)
    recorded = app.runpytest_subprocess(
        *QUIET,
        "--fal-record",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
    )
    recorded.assert_outcomes(passed=3)
    first = outputs(app.path)
    assert first["flux"]["images"][0]["url"].startswith("https://images.example/fake/")
    assert first["error"][0] == 422
    target = app.path / "fal.json"
    assert [(e["match"]["model"], e["response"].get("status", 200)) for e in entries(target)] == [
        ("fal-ai/flux/dev", 200),
        ("fal-ai/fast-sdxl", 200),
        ("fake/error", 422),
    ]
    # the key was read at session start, before the fal_client patch swapped in the dummy key
    assert {r.headers.get("Authorization") for r in fake.requests} == {f"Key {KEY}"}
    text = target.read_text()
    assert KEY not in text
    assert "plugin-secret-abcdefgh" not in text
    assert DUMMY_FAL_KEY not in text

    seen = len(fake.requests)
    for name in ("flux", "run", "error"):
        (app.path / f"{name}.json").unlink()
    replayed = app.runpytest_subprocess(*QUIET, "--fal-fixtures=fal.json")
    replayed.assert_outcomes(passed=3)
    assert outputs(app.path) == first
    assert len(fake.requests) == seen


def test_default_mode_never_touches_the_network(app: pytest.Pytester, fake: FakeFal) -> None:
    app.makepyfile(test_app=APP_TESTS)
    result = app.runpytest(*QUIET, f"--fal-upstream={fake.url}", "-k", "sync_run")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*fal_mock: 1 request matched no registered fixture:*"])
    assert fake.requests == []


def test_mode_new_serves_what_the_file_has_and_appends_the_rest(app: pytest.Pytester, fake: FakeFal) -> None:
    known = entry("fal-ai/flux/dev", "a cat", {"images": [], "seed": 99})
    (app.path / "fal.json").write_text(json.dumps({"fixtures": [known]}))
    app.makepyfile(test_app=APP_TESTS)
    result = app.runpytest(
        *QUIET,
        "--fal-record-mode=new",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
    )
    result.assert_outcomes(passed=3)
    assert outputs(app.path)["flux"]["seed"] == 99
    assert {r.path for r in fake.seen("queue.fal.run") if r.method == "POST"} == {"/fake/error"}
    assert [e["match"]["model"] for e in entries(app.path / "fal.json")] == [
        "fal-ai/flux/dev",
        "fal-ai/fast-sdxl",
        "fake/error",
    ]


def test_mode_once_records_when_the_file_is_missing(app: pytest.Pytester, fake: FakeFal) -> None:
    app.makepyfile(test_app=APP_TESTS)
    result = app.runpytest(
        *QUIET,
        "--fal-record-mode=once",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
    )
    result.assert_outcomes(passed=3)
    assert len(entries(app.path / "fal.json")) == 3


def test_mode_once_does_not_record_when_the_file_existed(app: pytest.Pytester, fake: FakeFal) -> None:
    other = entry("fal-ai/other", "x", {"ok": True})
    (app.path / "fal.json").write_text(json.dumps({"fixtures": [other]}))
    before = (app.path / "fal.json").read_text()
    app.makepyfile(test_app=APP_TESTS)
    result = app.runpytest(
        *QUIET,
        "--fal-record-mode=once",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
    )
    result.assert_outcomes(passed=1, failed=2, errors=3)  # test_error expects an exception: 404 is one
    result.stdout.fnmatch_lines(["*matched no registered fixture*"])
    assert fake.requests == []
    assert (app.path / "fal.json").read_text() == before


def test_mode_all_forwards_everything_and_replaces_entries(app: pytest.Pytester, fake: FakeFal) -> None:
    stale = entry("fal-ai/flux/dev", "a cat", {"images": [], "seed": 99})
    other = entry("fal-ai/other", "x", {"ok": True})
    (app.path / "fal.json").write_text(json.dumps({"fixtures": [stale, other]}))
    app.makepyfile(
        test_app="""
        import fal_client

        def test_recorded_again(fal_mock):
            assert fal_client.subscribe("fal-ai/flux/dev", arguments={"prompt": "a cat"})["seed"] == 1

        def test_per_test_fixtures_still_win(fal_mock):
            fal_mock.on_run("fal-ai/flux/dev", {"from": "test"})
            assert fal_client.run("fal-ai/flux/dev", arguments={"prompt": "a cat"}) == {"from": "test"}
        """
    )
    result = app.runpytest(
        *QUIET,
        "--fal-record-mode=all",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
    )
    result.assert_outcomes(passed=2)
    assert [r.method for r in fake.requests if r.method == "POST"] == ["POST"]
    written = entries(app.path / "fal.json")
    assert [e["match"]["model"] for e in written] == ["fal-ai/flux/dev", "fal-ai/other"]
    assert written[0]["response"]["json"]["seed"] == 1
    assert written[1] == other


def test_ini_fal_upstream(app: pytest.Pytester, fake: FakeFal) -> None:
    app.makeini(f"[pytest]\nfal_upstream = {fake.url}\n")
    app.makepyfile(test_app=APP_TESTS)
    result = app.runpytest(*QUIET, "--fal-record", "--fal-fixtures=fal.json", "-k", "sync")
    result.assert_outcomes(passed=1)
    assert [(r.host, r.path) for r in fake.requests] == [("fal.run", "/fal-ai/fast-sdxl")]


def test_xdist_workers_record_into_one_file(app: pytest.Pytester, fake: FakeFal) -> None:
    app.makepyfile(
        test_app="""
        import fal_client, pytest

        @pytest.mark.parametrize("n", range(6))
        def test_prompt(fal_mock, n):
            assert fal_client.run("fal-ai/flux/dev", arguments={"prompt": f"p{n}"})["prompt"] == f"p{n}"
        """
    )
    result = app.runpytest_subprocess(
        *QUIET_WITH_XDIST,
        "-n",
        "2",
        "--fal-record-mode=once",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
    )
    result.assert_outcomes(passed=6)
    prompts = sorted(e["match"]["input"]["prompt"] for e in entries(app.path / "fal.json"))
    assert prompts == [f"p{n}" for n in range(6)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fal-record"], "*record mode 'new' needs --fal-fixtures PATH*"),
        (["--fal-record-mode=all"], "*record mode 'all' needs --fal-fixtures PATH*"),
        (["--fal-record-mode=sometimes"], "*--fal-record-mode: invalid choice: 'sometimes'*"),
        (
            ["--fal-record", "--fal-fixtures=fal.json", "--fal-upstream=ftp://x"],
            "*expected an http(s) base URL*",
        ),
        (["--fal-record", "--fal-fixtures=."], "*the record target * is a directory; name a JSON file*"),
        (["--fal-fixtures=missing.json"], "*fal fixture file *missing.json does not exist*"),
    ],
)
def test_option_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*QUIET, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
