"""Apps in other processes: ``fal_mock.env`` for a child, ``FAL_MOCK_URL`` for any Python program.

Every child app starts with ``net_guard.SOURCE`` (nothing but loopback may be looked up or
connected to) and prints what it tried last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path
from typing import Iterator, Optional

import pytest
from httpclient import http
from inner_runs import QUIET
from net_guard import SOURCE

from pytest_falmock import FalMock
from pytest_falmock._clients._startup import child_environment, install
from pytest_falmock._constants import DUMMY_FAL_KEY

ROOT = Path(__file__).resolve().parent.parent
PTH = "pytest_falmock.pth"
FLUX = {"images": [{"url": "https://example.com/cat.png"}]}
REAL_KEY = "fk-real-0123456789:real-secret-abcdefgh"
#: The keys a child would otherwise inherit from the developer's shell.
KEY_VARIABLES = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_MOCK_URL")

CHILD_APP = (
    SOURCE
    + """
import json
import sys

import fal_client

out = {"subscribe": fal_client.subscribe(sys.argv[1], arguments={"prompt": "a cat"})}
if "--fal" in sys.argv:
    import fal.apps

    out["fal.apps.run"] = fal.apps.run(sys.argv[1], {"prompt": "a dog"})
out["attempts"] = NON_LOOPBACK_ATTEMPTS
print(json.dumps(out))
"""
)


def run_child(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )


def clean_environment(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in KEY_VARIABLES}
    env.update(extra)
    return env


@pytest.fixture
def child_app(tmp_path: Path) -> Path:
    script = tmp_path / "app.py"
    script.write_text(CHILD_APP)
    return script


def test_the_pth_hook_is_installed_next_to_the_package() -> None:
    installed = Path(sysconfig.get_paths()["purelib"]) / PTH
    assert installed.is_file(), f"{installed} is missing: reinstall with pip install -e '.[dev]'"
    assert installed.read_text() == (ROOT / PTH).read_text()


def test_a_child_started_with_fal_mock_env_is_served_and_journaled(
    fal_mock: FalMock, child_app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAL_KEY", REAL_KEY)  # the developer's key: the child never gets it
    fal_mock.on_queue("fal-ai/flux/dev", FLUX)

    assert set(fal_mock.env) == {"FAL_MOCK_URL", "FAL_KEY", "NO_PROXY", "no_proxy"}
    assert fal_mock.env["FAL_MOCK_URL"] == fal_mock.url
    assert fal_mock.env["FAL_KEY"] == DUMMY_FAL_KEY
    done = run_child(child_app, {**os.environ, **fal_mock.env}, "fal-ai/flux/dev")

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out == {"subscribe": FLUX, "attempts": []}
    assert [r.route for r in fal_mock.requests] == ["queue.submit", "queue.status", "queue.result"]
    assert fal_mock.requests[0].input == {"prompt": "a cat"}
    fal_mock.assert_called("fal-ai/flux/dev", times=1)


def test_an_unmatched_child_call_fails_the_parent_test(pytester: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(CHILD_APP)
    pytester.makepyfile(
        f"""
        import os
        import subprocess
        import sys

        def test_parent(fal_mock):
            done = subprocess.run(
                [sys.executable, {str(tmp_path / "app.py")!r}, "fal-ai/nobody-registered-this"],
                env={{**os.environ, **fal_mock.env}},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode != 0  # the app saw fal's error for an unknown request
        """
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_parent*",
            "fal_mock: 1 request matched no registered fixture:",
            "- POST /fal/queue/fal-ai/nobody-registered-this (route queue.submit, *",
        ]
    )


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[str]:
    """``fal-mock`` as its own process, as a developer starts it; yields its proxy URL."""
    fixtures = tmp_path / "fal.json"
    fixtures.write_text(
        json.dumps({"fixtures": [{"match": {"model": "fal-ai/flux/dev"}, "response": {"json": FLUX}}]})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_falmock", "--fixtures", str(fixtures), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environment(),
    )
    try:
        line: list[str] = []
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        assert line, "fal-mock printed nothing"
        assert line[0].startswith("http://127.0.0.1:"), line
        yield line[0].strip()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("key", [None, REAL_KEY], ids=["no key", "a real key"])
def test_fal_mock_url_points_any_python_program_at_a_standalone_server(
    standalone: str, child_app: Path, key: Optional[str]
) -> None:
    env = clean_environment(FAL_MOCK_URL=standalone, **({"FAL_KEY": key} if key else {}))
    args = ["fal-ai/flux/dev", *(["--fal"] if key is None else [])]

    done = run_child(child_app, env, *args)

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out.pop("attempts") == []  # nothing - and so no key - left this machine
    assert out == {"subscribe": FLUX, **({"fal.apps.run": FLUX} if key is None else {})}
    journal = http("GET", standalone[: -len("/fal")] + "/__falmock/requests").json
    submits = [r for r in journal if r["route"] == "queue.submit"]
    assert len(submits) == (2 if key is None else 1)  # fal_client, then fal.apps


def test_without_fal_mock_url_the_hook_imports_nothing() -> None:
    code = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pytest_falmock'))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean_environment(), capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_with_fal_mock_url_the_hook_waits_for_the_client_to_be_imported() -> None:
    code = (
        "import sys\n"
        "print('fal_client' in sys.modules, 'httpx' in sys.modules)\n"
        "import fal_client.client as fc\n"
        "print(fc.QUEUE_URL_FORMAT)\n"
    )
    env = clean_environment(FAL_MOCK_URL="http://127.0.0.1:4005/fal")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.splitlines() == ["False False", "http://127.0.0.1:4005/fal/queue/"], done.stderr


def test_a_bad_fal_mock_url_fails_the_client_import_instead_of_reaching_fal() -> None:
    env = clean_environment(FAL_MOCK_URL="127.0.0.1:4005")
    done = subprocess.run(
        [sys.executable, "-c", "import fal_client"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "FalClientPatchError: FAL_MOCK_URL='127.0.0.1:4005' is not a mock URL" in done.stderr


def test_child_environment_keeps_no_proxy_and_names_the_mock_host() -> None:
    env = child_environment("http://fal-mock:4005/fal", {"NO_PROXY": "internal.example"})
    assert env == {
        "FAL_MOCK_URL": "http://fal-mock:4005/fal",
        "FAL_KEY": DUMMY_FAL_KEY,
        "NO_PROXY": "internal.example,fal-mock,127.0.0.1,localhost",
        "no_proxy": "fal-mock,127.0.0.1,localhost",
    }


def test_install_does_nothing_without_the_variable() -> None:
    assert install({}) is None


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({}, DUMMY_FAL_KEY),
        ({"FAL_KEY": REAL_KEY}, REAL_KEY),
        ({"FAL_KEY_ID": "id-1", "FAL_KEY_SECRET": "s-1"}, "id-1:s-1"),
    ],
)
def test_install_redirects_with_the_environments_key_or_the_dummy(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], key: str
) -> None:
    import fal_client.client as fc

    from pytest_falmock._clients import _startup

    monkeypatch.setattr(_startup, "installed", None)
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    given = dict(os.environ, FAL_MOCK_URL="http://mock.internal:4005/fal")

    redirect = install(given)
    try:
        assert redirect is not None
        assert install(given) is redirect  # once per process
        assert fc.QUEUE_URL_FORMAT == "http://mock.internal:4005/fal/queue/"
        assert fc.fetch_auth_credentials().header_value == f"Key {key}"
        assert "mock.internal" in os.environ["NO_PROXY"].split(",")
        assert given.get("FAL_KEY") == environ.get("FAL_KEY", None if environ else DUMMY_FAL_KEY)
    finally:
        assert redirect is not None
        redirect.undo()


def test_the_wheel_ships_the_pth_at_its_root(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", PTH):
        (source / name).write_bytes((ROOT / name).read_bytes())
    package = source / "pytest_falmock"
    for path in (ROOT / "pytest_falmock").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            target = package / path.relative_to(ROOT / "pytest_falmock")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    build = f"import setuptools.build_meta as backend; backend.build_wheel({str(tmp_path)!r})"
    built = subprocess.run(
        [sys.executable, "-c", build], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("pytest_falmock-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read(PTH) == (ROOT / PTH).read_bytes()
    assert {"pytest_falmock/_clients/_startup.py", "pytest_falmock/plugin.py"} <= names
