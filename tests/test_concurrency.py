"""Many clients at once over real HTTP: nothing lost, nothing mixed up, no client blocks another."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
from rawhttp import exchange, request

from pytest_falmock import FalMock

FLUX = "fal-ai/flux/dev"
JSON = {"Content-Type": "application/json"}
THREADS = 16
CYCLES = 60


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, Any]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_16_threads_x_60_full_cycles_at_once(fal_mock: FalMock) -> None:
    fal_mock.on_image(FLUX, {"images": [{"url": "https://x/cat.png"}]})
    start = threading.Barrier(THREADS)
    results: dict[int, list[tuple[str, str, Any, Any]]] = {}
    errors: list[BaseException] = []

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=30)
        seen = results.setdefault(n, [])
        try:
            start.wait()
            for i in range(CYCLES):
                prompt = f"thread {n} cycle {i}"
                conn.request("POST", f"/fal/queue/{FLUX}", json.dumps({"prompt": prompt}), JSON)
                response = conn.getresponse()
                submitted = json.loads(response.read())
                assert response.status == 200, submitted
                status_code, status = _get(conn, urlsplit(submitted["status_url"]).path)
                result_code, result = _get(conn, urlsplit(submitted["response_url"]).path)
                assert (status_code, result_code) == (200, 200)
                seen.append((prompt, submitted["request_id"], status, result))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert all(not t.is_alive() for t in threads)

    cycles = [cycle for n in range(THREADS) for cycle in results[n]]
    assert len(cycles) == THREADS * CYCLES
    ids = [request_id for _, request_id, _, _ in cycles]
    assert len(set(ids)) == len(ids)
    for prompt, request_id, status, result in cycles:
        assert status["request_id"] == request_id
        assert status["status"] == "COMPLETED"
        assert result["prompt"] == prompt  # each answer belongs to its own request
        assert result["images"][0]["url"] == "https://x/cat.png"

    journal = fal_mock.requests
    assert len(journal) == 3 * THREADS * CYCLES
    assert sorted(r.request_id for r in journal if r.route == "queue.submit") == sorted(ids)
    assert sorted(r.input["prompt"] for r in journal if r.route == "queue.submit") == sorted(
        prompt for prompt, _, _, _ in cycles
    )
    fal_mock.assert_called(FLUX, times=THREADS * CYCLES)
    assert fal_mock._server.internal_errors == []


@pytest.mark.fal_queue(polls_before_in_progress=5, polls_before_completed=40)
def test_concurrent_polls_of_one_job_see_a_monotonic_state_sequence(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    (submitted,) = exchange(fal_mock.port, request("POST", f"/fal/queue/{FLUX}", body=b"{}"))
    assert (submitted.json["status"], submitted.json["queue_position"]) == ("IN_QUEUE", 5)
    status_path = f"/fal/queue/fal-ai/flux/requests/{submitted.json['request_id']}/status"
    order = {"IN_QUEUE": 0, "IN_PROGRESS": 1, "COMPLETED": 2}
    seen: dict[int, list[dict[str, Any]]] = {}
    start = threading.Barrier(8)

    def poller(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", fal_mock.port, timeout=30)
        try:
            start.wait()
            for _ in range(20):
                code, body = _get(conn, status_path)
                assert code == (200 if body["status"] == "COMPLETED" else 202)
                seen.setdefault(n, []).append(body)
        finally:
            conn.close()

    threads = [threading.Thread(target=poller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    everything = [body for bodies in seen.values() for body in bodies]
    assert len(everything) == 160
    for bodies in seen.values():  # each client sees the job only move forward
        states = [order[b["status"]] for b in bodies]
        assert states == sorted(states)
        positions = [b["queue_position"] for b in bodies if "queue_position" in b]
        assert positions == sorted(positions, reverse=True)
        logs = [len(b["logs"]) for b in bodies]
        assert logs == sorted(logs)
    # the k-th poll overall decides the state: 4 IN_QUEUE (positions 4..1), 35 IN_PROGRESS, rest done
    counts = {s: sum(b["status"] == s for b in everything) for s in order}
    assert counts == {"IN_QUEUE": 4, "IN_PROGRESS": 35, "COMPLETED": 121}
    assert sorted(b["queue_position"] for b in everything if b["status"] == "IN_QUEUE") == [1, 2, 3, 4]
    assert all(len(b["logs"]) == 3 for b in everything if b["status"] == "COMPLETED")


@pytest.mark.fal_mock(virtual_time=False)  # the status stream really waits for the slow job
def test_a_stalled_client_and_a_long_stream_do_not_block_others(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    fal_mock.on_queue("fal-ai/slow", {"ok": True}, latency=60)
    stalled = socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10)
    stalled.sendall(
        b"POST /fal/queue/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\npart"
    )  # never finished
    (slow,) = exchange(fal_mock.port, request("POST", "/fal/queue/fal-ai/slow", body=b"{}"))
    streaming = socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10)
    path = f"/fal/queue/fal-ai/slow/requests/{slow.json['request_id']}/status/stream"
    streaming.sendall(request("GET", path))
    try:
        assert streaming.recv(4096).startswith(b"HTTP/1.1 200 OK")  # an event every 50 ms from now on
        for _ in range(20):
            (answer,) = exchange(fal_mock.port, request("POST", f"/fal/queue/{FLUX}", body=b"{}"))
            assert answer.status == 200
        # all served while the stalled request still waits for its body (neither answered nor
        # cut off by the body timeout) and the stream still runs: nothing waited for either
        stalled.setblocking(False)
        with pytest.raises(BlockingIOError):
            stalled.recv(1)
        status_path = f"/fal/queue/fal-ai/slow/requests/{slow.json['request_id']}/status"
        (still,) = exchange(fal_mock.port, request("GET", status_path))
        assert (still.status, still.json["status"]) == (202, "IN_PROGRESS")
    finally:
        stalled.close()
        streaming.close()


def test_many_simultaneous_connections_are_all_served(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"ok": True})
    sockets = [socket.create_connection(("127.0.0.1", fal_mock.port), timeout=10) for _ in range(64)]
    try:
        for sock in sockets:  # all connected before any request: one thread each
            sock.sendall(request("POST", f"/fal/queue/{FLUX}", body=b"{}"))
        answers = []
        for sock in sockets:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            answers.append(data)
    finally:
        for sock in sockets:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
    assert len({json.loads(a.split(b"\r\n\r\n", 1)[1])["request_id"] for a in answers}) == 64
