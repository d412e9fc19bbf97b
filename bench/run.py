"""pytest-falmock benchmark: prints a table (see bench/README.md).

    python bench/run.py [--duration 5] [--rounds 3] [--tests 1000] [--jobs 10000] [--no-aimock]

1. full queue cycles/s (submit -> status -> result) from one keep-alive ``http.client``
   connection: against fal_mock in-process (as the pytest fixture runs it), fal_mock as a
   separate process (``python -m pytest_falmock``), and a bare threaded werkzeug app answering
   constant JSON (the floor of the werkzeug stack);
2. the same cycle through the real ``fal_client.subscribe`` in-process;
3. per-test overhead of the ``fal_mock`` fixture (setup + teardown with the fal_client patch)
   over N generated tests, against the same N empty tests, each file in its own pytest process;
4. p50/p99 latency of one status poll with 10,000 jobs in the store, of one submit into a full
   store of pending jobs (eviction at the bound), and memory per job;
5. when ``node`` and ``npm`` are on PATH: the same cycle against ``@copilotkit/aimock``'s
   ``llmock`` CLI (npm-installed into a cache directory), side by side, as a ratio;
6. media: the time to generate one 1024x1024 placeholder image (PNG, JPEG, WebP; median, no
   cache), and ``fal_client.upload`` of 101 MiB (a multipart upload) in-process;
7. virtual time, through the real ``fal_client`` in-process (median ms of ``--rounds`` x 5 calls):
   ``subscribe`` with ``polls=10`` and ``latency=5``, ``run`` through nine 429s, and
   ``subscribe(client_timeout=2)`` against ``latency=30``; then a generated suite of
   ``--vt-tests`` ``polls=3`` subscribe tests, run by pytest with and without virtual time;
8. realtime round trips/s (send a message, receive its msgpack result) through the real
   ``fal_client.realtime``, on one connection and on 8 at once.
9. the safety net: what the guard's hooks add to a fixture-less test (in one session, and
   end to end: guard on vs ``fal_guard = false``, the plugin vs ``-p no:falmock``), how fast a
   guarded ``fal_client`` call fails, and what the ``pytest_falmock.pth`` start-up hook costs.

Only npm's registry is contacted (step 5); every server listens on 127.0.0.1 and every
subprocess is stopped before the script exits. Throughput figures are the best of
``--rounds`` runs, taken alternately, so a noisy neighbour hurts every contender alike; the
aimock ratio is also given per round (each pair measured back to back).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_falmock import FalMock  # noqa: E402

MODEL = "fal-ai/flux/dev"
FIXTURE = {
    "fixtures": [
        {
            "match": {"model": MODEL, "endpoint": "fal"},
            "response": {"json": {"images": [{"url": "https://example.com/result.png"}]}},
        }
    ]
}
HEADERS = {"x-fal-target-host": "queue.fal.run", "content-type": "application/json"}
BODY = json.dumps({"prompt": "a cat"})
WARMUP = 200
AIMOCK_PACKAGE = "@copilotkit/aimock"
START_TIMEOUT = 30.0


# -- the cycle ---------------------------------------------------------------------------------
def cycle_loop(port: int, duration: float) -> float:
    """aimock-fal.md section 14's loop: one keep-alive connection, cycles/s after a warm-up."""
    conn = http.client.HTTPConnection("127.0.0.1", port)  # no timeout, exactly as in the reference loop

    def cycle() -> None:
        conn.request("POST", f"/fal/{MODEL}", BODY, HEADERS)
        response = conn.getresponse()
        submitted = json.loads(response.read())
        assert response.status == 200, (response.status, submitted)
        request_id = submitted["request_id"]
        conn.request("GET", f"/fal/fal-ai/flux/requests/{request_id}/status", headers=HEADERS)
        response = conn.getresponse()
        status = json.loads(response.read())
        assert status["status"] == "COMPLETED", status
        conn.request("GET", f"/fal/fal-ai/flux/requests/{request_id}", headers=HEADERS)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    try:
        for _ in range(WARMUP):
            cycle()
        count = 0
        start = time.perf_counter()
        end = start + duration
        while time.perf_counter() < end:
            cycle()
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        conn.close()


def bare_werkzeug_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The floor: a WSGI app that reads the body and answers a constant JSON document."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    body = b'{"request_id":"00000000-0000-4000-8000-000000000000","status":"COMPLETED"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@contextmanager
def werkzeug_server() -> Iterator[int]:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    server = make_server("127.0.0.1", 0, bare_werkzeug_app, threaded=True, request_handler=Quiet)
    server.daemon_threads = False  # so server_close() joins the request threads: none outlives this
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def in_process_mock() -> Iterator[FalMock]:
    mock = FalMock()
    mock.add_fixture_document(FIXTURE, "bench")
    with mock:
        yield mock


@contextmanager
def spawned(command: list[str], ready: Callable[[subprocess.Popen[str]], int]) -> Iterator[int]:
    """Run a server process; ``ready`` returns its port once it serves. Always stopped."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        yield ready(process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def wait_for_submit(port: int, process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", f"/fal/{MODEL}", BODY, HEADERS)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return port
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer within {START_TIMEOUT:.0f} s")


@contextmanager
def subprocess_mock(fixture_file: Path) -> Iterator[int]:
    def ready(process: subprocess.Popen[str]) -> int:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # the CLI prints its URL once it serves
        if not line.startswith("http://"):
            raise RuntimeError(f"python -m pytest_falmock printed {line!r}")
        port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        return wait_for_submit(port, process)

    command = [sys.executable, "-m", "pytest_falmock", "--fixtures", str(fixture_file), "--port", "0"]
    with spawned(command, ready) as port:
        yield port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- aimock --------------------------------------------------------------------------------------
def aimock_cli(cache: Path) -> Optional[tuple[Path, str]]:
    """npm-install aimock into ``cache`` once; (path to its llmock CLI, version) or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    package_dir = cache / "node_modules" / "@copilotkit" / "aimock"
    if not (package_dir / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        manifest = cache / "package.json"
        if not manifest.exists():
            manifest.write_text('{"name": "falmock-bench-aimock", "private": true}\n')
        print(f"installing {AIMOCK_PACKAGE} into {cache} ...", file=sys.stderr, flush=True)
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", AIMOCK_PACKAGE],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            print(f"npm install failed, skipping aimock:\n{result.stderr[-2000:]}", file=sys.stderr)
            return None
    meta = json.loads((package_dir / "package.json").read_text())
    bins = meta.get("bin", {})
    cli = bins.get("llmock") if isinstance(bins, dict) else None
    if not cli:
        return None
    return package_dir / cli, str(meta.get("version", "?"))


@contextmanager
def aimock_server(cli: Path, fixture_file: Path) -> Iterator[int]:
    port = free_port()
    node = shutil.which("node") or "node"
    command = [
        node,
        str(cli),
        "--fixtures",
        str(fixture_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "silent",
    ]
    with spawned(command, lambda process: wait_for_submit(port, process)) as ready_port:
        yield ready_port


# -- 2. fal_client ---------------------------------------------------------------------------------
def fal_client_loop(duration: float) -> Optional[float]:
    try:
        import fal_client
    except ImportError:
        return None
    from pytest_falmock._clients import ClientRedirect

    with in_process_mock() as mock:
        patch = ClientRedirect.for_test(mock.base_url)
        patch.apply()
        try:
            for _ in range(50):
                fal_client.subscribe(MODEL, {"prompt": "a cat"})
            count = 0
            start = time.perf_counter()
            end = start + duration
            while time.perf_counter() < end:
                result = fal_client.subscribe(MODEL, {"prompt": "a cat"})
                assert result["images"][0]["url"] == "https://example.com/result.png", result
                count += 1
            return count / (time.perf_counter() - start)
        finally:
            patch.undo()


# -- 7. virtual time ------------------------------------------------------------------------------
def virtual_time_calls(repeats: int) -> Optional[dict[str, float]]:
    """Median ms of each virtual-time target through the real fal_client (None: not installed)."""
    try:
        import fal_client
    except ImportError:
        return None
    from pytest_falmock._clients import ClientRedirect
    from pytest_falmock._jobs import QueueConfig

    def polls_and_latency(mock: FalMock) -> None:
        mock.configure(queue=QueueConfig(1, 10))  # polls=10
        mock.on_queue(MODEL, {"ok": True}, latency=5)
        assert fal_client.subscribe(MODEL, {}) == {"ok": True}

    def retried_429s(mock: FalMock) -> None:
        mock.on_run(MODEL, {"ok": True})
        mock.on_error(MODEL, status=429, times=9)
        assert fal_client.run(MODEL, {}) == {"ok": True}
        assert len(mock.requests) == 10

    def client_timeout(mock: FalMock) -> None:
        mock.on_queue(MODEL, {"ok": True}, latency=30)
        try:
            fal_client.subscribe(MODEL, {}, client_timeout=2)
        except fal_client.FalClientTimeoutError:
            return
        raise AssertionError("subscribe(client_timeout=2) did not time out")

    targets = {"polls": polls_and_latency, "429": retried_429s, "timeout": client_timeout}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    with FalMock() as mock:
        for attempt in range(repeats + 1):  # the first round warms the client up
            for name, target in targets.items():
                mock.reset()
                patch = ClientRedirect.for_test(mock.base_url, mock.clock)
                patch.apply()
                try:
                    start = time.perf_counter()
                    target(mock)
                    elapsed = time.perf_counter() - start
                finally:
                    patch.undo()
                if attempt:
                    samples[name].append(elapsed * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


SUITE_TEST = """
@pytest.mark.fal_queue(polls=3)
def test_{i}(fal_mock):
    fal_mock.on_queue("fal-ai/flux/dev", {{"n": {i}}})
    assert fal_client.subscribe("fal-ai/flux/dev", {{}}) == {{"n": {i}}}
"""


def virtual_time_suite(count: int) -> tuple[float, float, float, float]:
    """``count`` ``polls=3`` subscribe tests run by pytest, with and without virtual time:
    (virtual, real) seconds the tests took (setup + call + teardown, from a JUnit report), then
    (virtual, real) seconds of the whole pytest process (start-up and collection included)."""
    with tempfile.TemporaryDirectory(prefix="falmock-bench-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        tests = "".join(SUITE_TEST.format(i=i) for i in range(count))
        header = "import fal_client\nimport pytest\n"
        (root / "test_virtual.py").write_text(header + tests)
        opt_out = "pytestmark = pytest.mark.fal_mock(virtual_time=False)\n"
        (root / "test_real.py").write_text(header + opt_out + tests)

        def run(name: str) -> tuple[float, float]:
            report = root / f"{name}.xml"
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
            command += [f"--junitxml={report}", name]
            start = time.perf_counter()
            result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
            elapsed = time.perf_counter() - start
            if result.returncode != 0 or f"{count} passed" not in result.stdout:
                raise RuntimeError(f"pytest {name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            cases = ElementTree.parse(report).getroot().iter("testcase")
            return sum(float(case.get("time", "0")) for case in cases), elapsed

        (virtual, virtual_run), (real, real_run) = run("test_virtual.py"), run("test_real.py")
        return virtual, real, virtual_run, real_run


# -- 3. fixture overhead -----------------------------------------------------------------------------
TEST_FILE = """\
try:
    import fal_client  # noqa: F401  (imported by both files: the import is not overhead)
except ImportError:
    pass

{tests}
"""


def fixture_overhead(count: int, rounds: int) -> tuple[float, float, float]:
    """(empty-test wall s, fal_mock wall s, overhead ms per test), best of ``rounds``."""
    with tempfile.TemporaryDirectory(prefix="falmock-bench-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        (root / "test_empty.py").write_text(
            TEST_FILE.format(tests="\n".join(f"def test_{i}():\n    pass\n" for i in range(count)))
        )
        (root / "test_fal_mock.py").write_text(
            TEST_FILE.format(tests="\n".join(f"def test_{i}(fal_mock):\n    pass\n" for i in range(count)))
        )

        def run(name: str) -> float:
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
            start = time.perf_counter()
            result = subprocess.run([*command, name], cwd=root, capture_output=True, text=True, timeout=600)
            elapsed = time.perf_counter() - start
            if result.returncode != 0 or f"{count} passed" not in result.stdout:
                raise RuntimeError(f"pytest {name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            return elapsed

        empty: list[float] = []
        mocked: list[float] = []
        for _ in range(max(rounds, 2)):
            empty.append(run("test_empty.py"))
            mocked.append(run("test_fal_mock.py"))
    best_empty, best_mocked = min(empty), min(mocked)
    return best_empty, best_mocked, (best_mocked - best_empty) / count * 1000


# -- 4. latency and memory -------------------------------------------------------------------------
def submit(conn: http.client.HTTPConnection) -> str:
    conn.request("POST", f"/fal/{MODEL}", BODY, HEADERS)
    response = conn.getresponse()
    request_id: str = json.loads(response.read())["request_id"]
    return request_id


def poll_latency(jobs: int, polls: int) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms) of status polls with 100 jobs stored, then with ``jobs`` stored."""
    with in_process_mock() as mock:
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=30)
        try:
            ids = [submit(conn) for _ in range(100)]
            small = _polls(conn, ids, polls)
            ids += [submit(conn) for _ in range(jobs - len(ids))]
            assert len(mock._stores.jobs) == jobs
            large = _polls(conn, ids, polls)
        finally:
            conn.close()
    return small + large


def submit_at_bound(jobs: int, submits: int) -> tuple[float, float]:
    """(p50 ms, p99 ms) of submits into a store already holding ``jobs`` pending jobs (its bound):
    each one evicts a job."""
    mock = FalMock(max_jobs=jobs)
    mock.add_fixture_document(FIXTURE, "bench")
    mock.queue(polls=10)  # pending until polled: the case where eviction has no finished job to take
    with mock:
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=30)
        try:
            for _ in range(jobs):
                submit(conn)
            samples = []
            for _ in range(submits):
                start = time.perf_counter()
                submit(conn)
                samples.append((time.perf_counter() - start) * 1000)
            assert len(mock._stores.jobs) == jobs
        finally:
            conn.close()
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def _polls(conn: http.client.HTTPConnection, ids: list[str], polls: int) -> tuple[float, float]:
    rng = random.Random(0)
    samples = []
    for i in range(polls + 100):
        request_id = rng.choice(ids)
        start = time.perf_counter()
        conn.request("GET", f"/fal/fal-ai/flux/requests/{request_id}/status", headers=HEADERS)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        assert response.status == 200
        if i >= 100:
            samples.append(elapsed * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


def memory_per_job(jobs: int) -> tuple[float, float]:
    """(bytes per stored job, bytes per job including its journal record), via tracemalloc."""
    with in_process_mock() as mock:
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=30)
        try:
            submit(conn)
            mock.reset()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(jobs):
                submit(conn)
            gc.collect()
            with_journal = tracemalloc.get_traced_memory()[0] - before
            mock._stores.journal.clear()
            gc.collect()
            jobs_only = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        finally:
            conn.close()
    return jobs_only / jobs, with_journal / jobs


# -- media -----------------------------------------------------------------------------------------
def media_timings(repeats: int) -> dict[str, float]:
    """Median milliseconds to generate a 1024x1024 placeholder, per content type (uncached)."""
    from pytest_falmock._media import image

    out = {}
    for content_type in ("image/png", "image/jpeg", "image/webp"):
        times = []
        for i in range(repeats):
            started = time.perf_counter()
            image(1024, 1024, content_type, (i % 256, 90, 200))
            times.append((time.perf_counter() - started) * 1000)
        out[content_type] = statistics.median(times)
    return out


def upload_seconds(mib: int) -> Optional[float]:
    """Seconds for ``fal_client.upload`` of ``mib`` MiB through the mock (None without fal_client)."""
    try:
        import fal_client
    except ImportError:
        return None
    from pytest_falmock._clients import ClientRedirect

    data = (os.urandom((1 << 20) + 13) * (mib + 1))[: mib << 20]
    with in_process_mock() as mock:
        patch = ClientRedirect.for_test(mock.base_url)
        patch.apply()
        try:
            started = time.perf_counter()
            fal_client.upload(data, "application/octet-stream", file_name="bench.bin")
            return time.perf_counter() - started
        finally:
            patch.undo()


# -- 9. the safety net -------------------------------------------------------------------------------
GUARDED_FILE = """\
import fal_client  # noqa: F401  (imported, so the guard is armed)

{tests}
"""


def _child_cpu(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """CPU seconds (user + system) a child process used: steadier than wall time on a busy machine."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result


def guard_overhead(count: int, rounds: int) -> tuple[float, float, float]:
    """Per fixture-less test, in CPU ms: (what the guard adds: ``fal_guard`` on vs off, what the
    whole plugin adds vs ``-p no:falmock``, the cost of such a test with the guard on).

    Each variant runs a file of ``count`` tests and one of ``count // 5``; the per-test cost is
    the slope between the two (start-up and imports cancel out), best of ``rounds``.
    """
    small = max(count // 5, 1)
    with tempfile.TemporaryDirectory(prefix="falmock-bench-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        for n in (small, count):
            (root / f"test_{n}.py").write_text(
                GUARDED_FILE.format(tests="\n".join(f"def test_{i}():\n    pass\n" for i in range(n)))
            )
        variants = {"on": [], "off": ["-o", "fal_guard=false"], "no plugin": ["-p", "no:falmock"]}
        best: dict[tuple[str, int], float] = {}
        for _ in range(max(rounds, 5)):
            for name, extra in variants.items():
                for n in (small, count):
                    command = [
                        sys.executable,
                        "-m",
                        "pytest",
                        "-q",
                        "-p",
                        "no:randomly",
                        "-p",
                        "no:cacheprovider",
                    ]
                    command += ["-p", "no:xdist", "-p", "no:asyncio", "-p", "no:hypothesispytest", *extra]
                    cpu, result = _child_cpu([*command, f"test_{n}.py"], root)
                    if result.returncode != 0 or f"{n} passed" not in result.stdout:
                        raise RuntimeError(
                            f"pytest ({name}) failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
                        )
                    best[name, n] = min(best.get((name, n), cpu), cpu)

    def per_test(name: str) -> float:
        return (best[name, count] - best[name, small]) / (count - small) * 1000

    return per_test("on") - per_test("off"), per_test("on") - per_test("no plugin"), per_test("on")


def guard_hook_cost(count: int = 200, calls: int = 2000, rounds: int = 30) -> float:
    """µs the plugin's per-test hooks cost a fixture-less test, measured in one pytest session:
    three ``pytest_runtest_makereport`` calls (setup, call, teardown) with the plugin's wrapper
    minus the same without the plugin, plus its ``pytest_collection_modifyitems`` per item."""
    import pytest
    from _pytest.runner import CallInfo

    from pytest_falmock import plugin as falmock

    measured: dict[str, float] = {}

    def best(fn: Callable[[], None], number: int, repeat: int = 5) -> float:
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - start) / number)
        return min(samples)

    class Probe:
        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session: pytest.Session) -> bool:
            item = session.items[0]
            call = CallInfo.from_call(lambda: None, "call")
            manager = session.config.pluginmanager
            plugin = manager.get_plugin("falmock")
            if plugin is None or session.config.stash.get(falmock.GUARD_KEY, None) is None:
                raise RuntimeError("the plugin or its guard is not active")
            with_hook = manager.hook.pytest_runtest_makereport
            without_hook = manager.subset_hook_caller("pytest_runtest_makereport", remove_plugins=[plugin])
            with_plugin = without = float("inf")
            for _ in range(rounds):  # interleaved, best of each: a busy neighbour hurts both alike
                with_plugin = min(with_plugin, best(lambda: with_hook(item=item, call=call), calls, 1))
                without = min(without, best(lambda: without_hook(item=item, call=call), calls, 1))
            items = list(session.items)
            modify = best(lambda: falmock.pytest_collection_modifyitems(session.config, items), 50) / len(
                items
            )
            measured["us"] = (3 * (with_plugin - without) + modify) * 1e6
            return True

    with tempfile.TemporaryDirectory(prefix="falmock-bench-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        test_file = root / "test_plain.py"
        test_file.write_text(
            GUARDED_FILE.format(tests="\n".join(f"def test_{i}():\n    pass\n" for i in range(count)))
        )
        args = ["-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:asyncio"]
        code = pytest.main(
            [*args, "--rootdir", str(root), "-c", str(root / "pytest.ini"), str(test_file)], plugins=[Probe()]
        )
        if "us" not in measured:
            raise RuntimeError(f"the hook probe did not run (pytest exit code {code})")
    return measured["us"]


def guard_fail_fast(calls: int = 50) -> Optional[tuple[float, float, float]]:
    """Median ms for a refused ``fal_client.run``, ``run_async`` and ``subscribe`` (None without it)."""
    try:
        import fal_client
    except ImportError:
        return None
    import asyncio

    from pytest_falmock._clients._guard import Guard

    def refused() -> None:
        raise RuntimeError("the guard let a call through")

    def timed(call: Callable[[], Any]) -> float:
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            try:
                call()
            except fal_client.FalClientHTTPError:
                samples.append((time.perf_counter() - start) * 1000)
            else:
                refused()
        return statistics.median(samples)

    async def timed_async() -> float:
        client = fal_client.AsyncClient()
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            try:
                await client.run(MODEL, {"prompt": "a cat"})
            except fal_client.FalClientHTTPError:
                samples.append((time.perf_counter() - start) * 1000)
            else:
                refused()
        return statistics.median(samples)

    guard = Guard()
    guard.arm()
    try:
        return (
            timed(lambda: fal_client.run(MODEL, {"prompt": "a cat"})),
            asyncio.run(timed_async()),
            timed(lambda: fal_client.subscribe(MODEL, {"prompt": "a cat"})),
        )
    finally:
        guard.disarm()


def pth_cost(starts: int = 20) -> tuple[float, Optional[float]]:
    """(µs the installed ``pytest_falmock.pth`` costs an interpreter start with ``FAL_MOCK_URL``
    unset, measured as ``site`` runs it; ms an interpreter start costs with it set, or None if
    the hook is not installed)."""
    import site
    import sysconfig
    import timeit

    sitedir = sysconfig.get_paths()["purelib"]
    if not (Path(sitedir) / "pytest_falmock.pth").is_file():
        return float("nan"), None
    saved = os.environ.pop("FAL_MOCK_URL", None)
    try:
        number = 2000
        seconds = min(
            timeit.repeat(
                lambda: site.addpackage(sitedir, "pytest_falmock.pth", set()), number=number, repeat=5
            )
        )
    finally:
        if saved is not None:
            os.environ["FAL_MOCK_URL"] = saved
    unset = {k: v for k, v in os.environ.items() if k != "FAL_MOCK_URL"}
    with_url = {**unset, "FAL_MOCK_URL": "http://127.0.0.1:4005/fal"}

    def start(env: dict[str, str]) -> float:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        return time.perf_counter() - began

    plain, hooked = [], []
    for _ in range(starts):
        plain.append(start(unset))
        hooked.append(start(with_url))
    return seconds / number * 1e6, (min(hooked) - min(plain)) * 1000


# -- the table -------------------------------------------------------------------------------------
def cycles(port: int, duration: float) -> Callable[[], float]:
    return lambda: cycle_loop(port, duration)


def interleaved(rounds: int, contenders: dict[str, Callable[[], float]]) -> list[dict[str, float]]:
    """Run every contender once per round, back to back; one ``{name: cycles/s}`` per round."""
    return [{name: run() for name, run in contenders.items()} for _ in range(rounds)]


def ratio_spread(samples: list[dict[str, float]], ours: str, theirs: str) -> str:
    """The per-round ratio (both measured back to back): median and range."""
    ratios = sorted(sample[ours] / sample[theirs] for sample in samples)
    return f"median {statistics.median(ratios):.2f}x, range {ratios[0]:.2f}x-{ratios[-1]:.2f}x"


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, {platform.system()}"


# -- 8. realtime -----------------------------------------------------------------------------------
def realtime_loop(duration: float, connections: int = 1) -> Optional[float]:
    """Round trips/s (all connections together) of ``fal_client.realtime`` against the mock."""
    try:
        import fal_client
    except ImportError:
        return None
    from pytest_falmock._clients import ClientRedirect

    counts = [0] * connections
    with FalMock() as mock:
        mock.on_realtime("fal-ai/fast-lcm-diffusion", {"images": [{"url": "https://example.com/0.jpeg"}]})
        patch = ClientRedirect.for_test(mock.base_url)
        patch.apply()
        barrier = threading.Barrier(connections + 1)

        def client(n: int) -> None:
            with fal_client.realtime("fal-ai/fast-lcm-diffusion") as conn:
                for _ in range(WARMUP):
                    conn.send({"prompt": "a cat"})
                    conn.recv()
                barrier.wait()
                end = time.perf_counter() + duration
                while time.perf_counter() < end:
                    conn.send({"prompt": "a cat"})
                    assert conn.recv() is not None
                    counts[n] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
        try:
            for thread in threads:
                thread.start()
            barrier.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            return sum(counts) / (time.perf_counter() - start)
        finally:
            patch.undo()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per throughput figure, best kept (3)")
    parser.add_argument("--tests", type=int, default=1000, help="generated tests for the overhead (1000)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the store for latency (10000)")
    parser.add_argument("--polls", type=int, default=2000, help="timed status polls (2000)")
    parser.add_argument("--vt-tests", type=int, default=100, help="generated tests for section 7 (100)")
    parser.add_argument("--no-aimock", action="store_true", help="skip the aimock comparison")
    parser.add_argument(
        "--sections",
        default="1,2,3,4,5,6,7,8,9",
        help="comma-separated sections to run (default all: 1,2,3,4,5,6,7,8,9)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-falmock-bench",
        help="where aimock is npm-installed (default ~/.cache/pytest-falmock-bench)",
    )
    args = parser.parse_args(argv)
    sections = {part.strip() for part in args.sections.split(",")}
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name}: {value}", file=sys.stderr, flush=True)

    print(f"machine: {machine()}", file=sys.stderr)
    aimock = None if args.no_aimock or "5" not in sections else aimock_cli(args.cache / "aimock")
    best: dict[str, float] = {}
    samples: list[dict[str, float]] = []
    if sections & {"1", "5"}:
        with tempfile.TemporaryDirectory(prefix="falmock-bench-") as tmp:
            fixture_file = Path(tmp) / "fal.json"
            fixture_file.write_text(json.dumps(FIXTURE))
            with ExitStack() as stack:
                ports = {
                    "fal_mock in-process": stack.enter_context(in_process_mock()).port,
                    "fal_mock process": stack.enter_context(subprocess_mock(fixture_file)),
                }
                if "1" in sections:
                    ports["werkzeug floor"] = stack.enter_context(werkzeug_server())
                if aimock is not None:
                    ports["aimock"] = stack.enter_context(aimock_server(aimock[0], fixture_file))
                contenders = {name: cycles(port, args.duration) for name, port in ports.items()}
                samples = interleaved(args.rounds, contenders)
                best = {name: max(sample[name] for sample in samples) for name in contenders}
        row("1. cycles/s, fal_mock in-process (as in pytest)", f"{best['fal_mock in-process']:,.0f}")
        row(
            "1. cycles/s, fal_mock as a process (python -m pytest_falmock)",
            f"{best['fal_mock process']:,.0f}",
        )
    if "1" in sections:
        row("1. cycles/s, bare threaded werkzeug app, constant JSON", f"{best['werkzeug floor']:,.0f}")
    if "2" in sections:
        subscribe = fal_client_loop(args.duration)
        row(
            "2. cycles/s, fal_client.subscribe in-process",
            f"{subscribe:,.0f}" if subscribe is not None else "skipped (fal_client not installed)",
        )
    if "3" in sections:
        empty, mocked, per_test = fixture_overhead(args.tests, args.rounds)
        row(
            f"3. fal_mock fixture overhead per test ({args.tests} tests)",
            f"{per_test:.2f} ms ({mocked:.2f} s vs {empty:.2f} s for empty tests)",
        )
    if "4" in sections:
        p50_small, p99_small, p50, p99 = poll_latency(args.jobs, args.polls)
        row(f"4. status poll p50 / p99, {args.jobs:,} jobs stored", f"{p50:.3f} / {p99:.3f} ms")
        row("4. status poll p50 / p99, 100 jobs stored", f"{p50_small:.3f} / {p99_small:.3f} ms")
        p50_bound, p99_bound = submit_at_bound(args.jobs, min(args.polls, 500))
        bound_name = f"4. submit p50 / p99, store full of {args.jobs:,} pending jobs"
        row(bound_name, f"{p50_bound:.3f} / {p99_bound:.3f} ms")
        jobs_only, with_journal = memory_per_job(min(args.jobs, 5000))
        row("4. memory per stored job (+ its journal record)", f"{jobs_only:,.0f} B ({with_journal:,.0f} B)")
    if "5" in sections:
        if aimock is not None:
            theirs = best["aimock"]
            row(f"5. cycles/s, aimock {aimock[1]} (node {node_version()}), same loop", f"{theirs:,.0f}")
            for ours in ("fal_mock as a process", "fal_mock in-process"):
                name = "fal_mock process" if ours == "fal_mock as a process" else ours
                spread = ratio_spread(samples, name, "aimock")
                row(f"5. {ours} / aimock", f"{best[name] / theirs:.2f}x best vs best ({spread} per round)")
        else:
            row("5. aimock", "skipped (--no-aimock, or node/npm not found)")
    if "6" in sections:
        timings = media_timings(20)
        shown = " / ".join(f"{timings[kind]:.1f}" for kind in ("image/png", "image/jpeg", "image/webp"))
        row("6. generate a 1024x1024 placeholder, PNG / JPEG / WebP", f"{shown} ms")
        seconds = upload_seconds(101)
        row(
            "6. fal_client.upload of 101 MiB (multipart), in-process",
            f"{seconds:.2f} s ({101 / seconds:,.0f} MiB/s)"
            if seconds
            else "skipped (fal_client not installed)",
        )
    if "7" in sections:
        calls = virtual_time_calls(args.rounds * 5)
        if calls is None:
            row("7. virtual time", "skipped (fal_client not installed)")
        else:
            row("7. subscribe, polls=10 + latency=5 (median)", f"{calls['polls']:.1f} ms")
            row("7. run through nine 429s, then 200 (median)", f"{calls['429']:.1f} ms")
            timeout = f"{calls['timeout']:.1f} ms"
            row("7. subscribe(client_timeout=2) vs latency=30 -> timeout (median)", timeout)
            virtual, real, virtual_run, real_run = virtual_time_suite(args.vt_tests)
            row(
                f"7. {args.vt_tests} polls=3 subscribe tests, virtual vs real time",
                f"{virtual:.2f} s vs {real:.2f} s: {real / virtual:.1f}x faster "
                f"(whole pytest runs {virtual_run:.2f} s vs {real_run:.2f} s)",
            )
    if "8" in sections:
        for connections in (1, 8):
            rate = max((realtime_loop(args.duration, connections) or 0.0) for _ in range(args.rounds))
            row(
                f"8. realtime round trips/s, fal_client.realtime, {connections} connection"
                + ("s" if connections > 1 else ""),
                f"{rate:,.0f}" if rate else "skipped (fal_client not installed)",
            )

    if "9" in sections:
        row(
            "9. guard hooks per fixture-less test (in-process, plugin vs none)", f"{guard_hook_cost():.2f} µs"
        )
        tests = max(args.tests, 2000)
        guard, plugin, per_test = guard_overhead(tests, args.rounds)
        row(
            f"9. guard cost per fixture-less test (CPU, {tests} vs {tests // 5} tests, fal_guard on vs off)",
            f"{guard:+.3f} ms (plugin vs -p no:falmock: {plugin:+.3f} ms; such a test: {per_test:.3f} ms)",
        )
        fast = guard_fail_fast()
        row(
            "9. a refused call fails in (median): run / run_async / subscribe",
            "skipped (fal_client not installed)"
            if fast is None
            else " / ".join(f"{ms:.2f} ms" for ms in fast),
        )
        unset_us, set_ms = pth_cost()
        row(
            "9. pytest_falmock.pth per interpreter start: FAL_MOCK_URL unset / set",
            f"{unset_us:.1f} µs / "
            + (
                "not installed"
                if set_ms is None
                else f"{set_ms:+.1f} ms (hook only; clients patched on import)"
            ),
        )

    print(f"\nMachine: {machine()}")
    print(f"Throughput: best of {args.rounds} interleaved runs of {args.duration:g} s each.\n")
    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    return 0


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "?"
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
