"""Raw-socket HTTP for the server tests: send exact bytes, parse exactly what comes back."""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any, Optional

TIMEOUT = 10.0


class RawResponse:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, head: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body
        #: The status line and header block as received.
        self.head = head

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.headers} {self.body[:200]!r}>"


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            _, _, rest = data.partition(b"\r\n")  # no trailers from our server
            return body, rest
        body += data[:size]
        assert data[size : size + 2] == b"\r\n", data[size : size + 10]
        data = data[size + 2 :]


def parse_responses(raw: bytes, head_only: bool = False) -> list[RawResponse]:
    """Every response in ``raw`` (interim 1xx answers included), in order."""
    out: list[RawResponse] = []
    while raw:
        head, sep, raw = raw.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head[:300]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, status_text, *_ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        status = int(status_text)
        headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        pairs = [(name, value) for name, value in headers]
        by_name = {name.lower(): value for name, value in pairs}
        if head_only or status < 200 or status in (204, 304):
            body = b""
        elif by_name.get("transfer-encoding") == "chunked":
            body, raw = _dechunk(raw)
        elif "content-length" in by_name:
            length = int(by_name["content-length"])
            body, raw = raw[:length], raw[length:]
            assert len(body) == length, "short body"
        else:  # close-delimited
            body, raw = raw, b""
        out.append(RawResponse(status, pairs, body, head))
    return out


def exchange(
    port: int, data: bytes, *, timeout: float = TIMEOUT, head_only: bool = False
) -> list[RawResponse]:
    """Send ``data``, read until the server closes the connection, parse every response.

    A server that neither answers nor closes within ``timeout`` fails the test (a hang).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # may fail when the server answered early (e.g. 413) and closed
        received = read_until_close(sock)
    return parse_responses(received, head_only)


def read_until_close(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def request(
    method: str,
    target: str,
    headers: Optional[list[tuple[str, str]]] = None,
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    close: bool = True,
    length: bool = True,
) -> bytes:
    """Bytes of one request; ``Host`` and ``Content-Length`` added unless given."""
    fields = list(headers or [])
    names = {name.lower() for name, _ in fields}
    if "host" not in names:
        fields.insert(0, ("Host", "127.0.0.1"))
    if length and body and "content-length" not in names and "transfer-encoding" not in names:
        fields.append(("Content-Length", str(len(body))))
    if close and "connection" not in names:
        fields.append(("Connection", "close"))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    return head.encode("latin-1") + body


def chunked(body: bytes, size: int = 7) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
