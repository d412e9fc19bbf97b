"""bench/run.py stays runnable: its building blocks, in miniature (the figures are not checked)."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("falmock_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["falmock_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_the_cycle_loop_runs_against_the_mock_and_the_werkzeug_floor(bench: ModuleType) -> None:
    before = set(threading.enumerate())
    with bench.in_process_mock() as mock:
        assert bench.cycle_loop(mock.port, 0.05) > 0
        assert len(mock.requests) >= 3 * bench.WARMUP
    with bench.werkzeug_server() as port:
        assert bench.cycle_loop(port, 0.05) > 0
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []


def test_latency_memory_and_fal_client_sections_run(bench: ModuleType) -> None:
    p50_small, p99_small, p50, p99 = bench.poll_latency(jobs=300, polls=50)
    assert 0 < p50_small <= p99_small
    assert 0 < p50 <= p99
    p50_bound, p99_bound = bench.submit_at_bound(jobs=200, submits=30)
    assert 0 < p50_bound <= p99_bound
    jobs_only, with_journal = bench.memory_per_job(200)
    assert 0 < jobs_only < with_journal
    assert bench.fal_client_loop(0.05) > 0


def test_the_media_section_runs(bench: ModuleType) -> None:
    timings = bench.media_timings(1)
    assert set(timings) == {"image/png", "image/jpeg", "image/webp"}
    assert all(ms > 0 for ms in timings.values())
    assert bench.upload_seconds(1) > 0


def test_the_table_lists_each_section(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--sections", "4", "--jobs", "200", "--polls", "20"]) == 0
    table = capsys.readouterr().out
    assert "| 4. status poll p50 / p99, 200 jobs stored" in table
    assert "| 4. memory per stored job" in table
    assert "| 4. submit p50 / p99, store full of 200 pending jobs" in table
    assert "Machine: " in table


def test_the_virtual_time_calls_run(bench: ModuleType) -> None:
    calls = bench.virtual_time_calls(1)
    assert set(calls) == {"polls", "429", "timeout"}
    assert all(ms > 0 for ms in calls.values())


def test_the_realtime_section_runs(bench: ModuleType) -> None:
    assert bench.realtime_loop(0.05) > 0
    assert bench.realtime_loop(0.05, connections=2) > 0


def test_the_safety_net_rows_measure_a_refusal_and_the_start_up_hook(bench: ModuleType) -> None:
    run, run_async, subscribe = bench.guard_fail_fast(calls=3)
    assert min(run, run_async, subscribe) > 0
    unset_us, set_ms = bench.pth_cost(starts=1)
    assert unset_us > 0
    assert set_ms is not None
