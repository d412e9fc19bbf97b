"""Big uploads stay out of memory: the standalone server's peak RSS under a 300 MiB multipart upload."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

MiB = 1024 * 1024
PART = 10 * MiB
PARTS = 30  # 300 MiB
BOUND = 64 * MiB

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_falmock", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    try:
        assert url.endswith("/fal"), url
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def part_body(block: memoryview, number: int) -> Iterator[bytes]:
    yield number.to_bytes(8, "big")  # every part differs in its first bytes
    yield from (block[i : i + MiB] for i in range(8, PART, MiB))


def test_a_300_mib_multipart_upload_raises_the_server_rss_by_less_than_64_mib(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    proc, url = server
    netloc = urlsplit(url).netloc
    block = memoryview(os.urandom(PART))

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(netloc, timeout=60)

    conn = connect()
    conn.request("POST", "/fal/cdn/files/upload/multipart", b"", {"X-Fal-File-Name": "big.bin"})
    started = json.loads(conn.getresponse().read())
    access_url, upload_id = started["access_url"], started["uploadId"]
    base = f"{urlsplit(access_url).path}/multipart/{upload_id}"
    with contextlib.suppress(OSError):  # measure from here: zero the peak (Linux >= 4.0)
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
    before = memory(proc.pid)

    etags: dict[int, str] = {}
    numbers = iter(range(1, PARTS + 1))
    lock = threading.Lock()

    def uploader() -> None:
        mine = connect()
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                mine.close()
                return
            mine.request("PUT", f"{base}/{number}", part_body(block, number), {"Content-Length": str(PART)})
            answer = mine.getresponse()
            answer.read()
            assert answer.status == 200
            etags[number] = str(answer.getheader("ETag"))

    threads = [threading.Thread(target=uploader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parts = [{"partNumber": n, "etag": etags[n]} for n in range(1, PARTS + 1)]
    conn.request(
        "POST", f"{base}/complete", json.dumps({"parts": parts}), {"Content-Type": "application/json"}
    )
    assert conn.getresponse().read() == json.dumps({"access_url": access_url}, separators=(",", ":")).encode()

    expected, served = hashlib.sha256(), hashlib.sha256()
    for number in range(1, PARTS + 1):
        for piece in part_body(block, number):
            expected.update(piece)
    conn.request("GET", urlsplit(access_url).path)
    answer = conn.getresponse()
    assert answer.getheader("Content-Length") == str(PARTS * PART)
    while piece := answer.read(MiB):
        served.update(piece)
    conn.close()
    after = memory(proc.pid)

    assert served.hexdigest() == expected.hexdigest()
    growth = after["VmHWM"] - before["VmRSS"]
    print(f"fal-mock RSS before {before['VmRSS'] / MiB:.1f} MiB, peak after {after['VmHWM'] / MiB:.1f} MiB")
    assert growth < BOUND, f"peak RSS grew by {growth / MiB:.1f} MiB (before: {before}, after: {after})"
