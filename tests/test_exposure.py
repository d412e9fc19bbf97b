"""Nothing from outside gets in: Host names (DNS rebinding), web pages on the control API, upload
URLs the mock never issued, and where the server listens. Over real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from rawhttp import exchange, request

from pytest_falmock import FalMock, FalMockWarning
from pytest_falmock._net import exposure_warning

FLUX = "fal-ai/flux/dev"
JSON = [("Content-Type", "application/json")]
PAGE = "https://evil.example"
CONTROL = [
    ("GET", "/__falmock/health"),
    ("GET", "/__falmock/requests"),
    ("POST", "/__falmock/reset"),
    ("POST", "/__falmock/fixtures"),
    ("POST", "/__falmock/advance"),  # routes other than today's are refused alike: a rule per family
    ("DELETE", "/__falmock/fixtures"),
    ("OPTIONS", "/__falmock/fixtures"),
]
DOC = json.dumps({"fixtures": [{"match": {"model": "fal-ai/injected"}, "response": {"json": {"pwned": 1}}}]})


@pytest.fixture
def mock() -> Iterator[FalMock]:
    """A fresh server each test: fixtures posted to the control API live for its whole session."""
    with FalMock(allow_hosts=["falmock"]) as server:
        server.on_run(FLUX, {"ok": 1})
        yield server


def send(mock: FalMock, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple:
    (answer,) = exchange(mock.port, request(method, target, headers, body), head_only=method == "HEAD")
    return answer


# -- Host: DNS rebinding ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        "rebind.evil.example",
        "rebind.evil.example:4005",
        "evil.localhost",
        "10.1.2.3",
        "queue.fal.run",
        "FALMOCK.example",
    ],
)
@pytest.mark.parametrize(("method", "target"), [("POST", f"/fal/run/{FLUX}"), *CONTROL])
def test_a_host_that_is_not_this_machine_is_refused_on_every_route(
    mock: FalMock, host: str, method: str, target: str
) -> None:
    answer = send(mock, method, target, [("Host", host), *JSON], b"{}")
    assert answer.status == 421
    name = host.rsplit(":", 1)[0].lower()
    assert answer.json["detail"].startswith(
        f"Host {name!r} is not served: fal_mock answers requests for localhost"
    )
    assert "--allow-host NAME" in answer.json["detail"]
    assert mock.requests == []  # refused before routing: nothing journaled, nothing run


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:4005",
        "127.0.0.1",
        "127.0.0.1:1",
        "127.9.9.9",
        "[::1]",
        "[::1]:80",
        "falmock:4005",
    ],
)
def test_loopback_names_the_bound_host_and_allowed_names_are_served(mock: FalMock, host: str) -> None:
    answer = send(mock, "POST", f"/fal/run/{FLUX}", [("Host", host), *JSON], b"{}")
    assert (answer.status, answer.json) == (200, {"ok": 1})


@pytest.mark.parametrize("host", ["[::1", "a b", "x:y:z", "host:port", "@", "a/b"])
def test_a_malformed_host_is_400(mock: FalMock, host: str) -> None:
    answer = send(mock, "GET", "/fal/queue/requests/x/status", [("Host", host)])
    assert answer.status == 400
    assert answer.json["detail"].startswith("Malformed Host header")


def test_an_absolute_form_target_is_checked_by_its_own_host(mock: FalMock) -> None:
    answer = send(
        mock, "POST", f"http://rebind.evil.example/fal/run/{FLUX}", [("Host", "127.0.0.1"), *JSON], b"{}"
    )
    assert answer.status == 421


def test_the_bound_host_is_allowed_and_a_wildcard_adds_nothing() -> None:
    assert "10.20.30.40" in FalMock(host="10.20.30.40")._server.allowed_hosts  # not started: not bound
    assert FalMock(host="0.0.0.0")._server.allowed_hosts == frozenset()
    assert FalMock(host="::", allow_hosts=["Mock.Internal"])._server.allowed_hosts == {"mock.internal"}


@pytest.mark.parametrize("name", ["http://x", "x:80", "a/b", "", "a b"])
def test_allow_hosts_takes_bare_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a host name; give a bare name or address"):
        FalMock(allow_hosts=[name])


# -- the control API: no web page, JSON only, no CORS ------------------------------------------
@pytest.mark.parametrize(("method", "target"), CONTROL)
@pytest.mark.parametrize(
    "page",
    [
        [("Origin", PAGE)],
        [("Origin", "null")],
        [("Origin", "http://localhost.evil.example")],
        [("Sec-Fetch-Site", "cross-site")],
    ],
)
def test_the_control_api_refuses_every_web_page_not_on_this_machine(
    mock: FalMock, method: str, target: str, page: list[tuple[str, str]]
) -> None:
    answer = send(mock, method, target, [*page, *JSON], DOC.encode())
    assert answer.status == 403
    assert answer.json["detail"].startswith("The control API does not answer ")
    assert not any(name.startswith("access-control-") for name in answer.headers)
    assert send(mock, "POST", "/fal/run/fal-ai/injected", JSON, b"{}").status == 404  # nothing injected


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:5173"])
def test_a_page_on_this_machine_may_drive_it_but_gets_no_cors_grant(mock: FalMock, origin: str) -> None:
    answer = send(mock, "POST", "/__falmock/fixtures", [("Origin", origin), *JSON], DOC.encode())
    assert (answer.status, answer.json) == (201, {"added": 1})
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_the_control_api_takes_json_bodies_only(mock: FalMock, content_type: str) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    answer = send(mock, "POST", "/__falmock/fixtures", headers, DOC.encode())
    assert answer.status == 415
    shown = repr(content_type) if content_type else "none"
    assert answer.json == {
        "detail": f"The control API takes JSON only: send Content-Type: application/json (got {shown})"
    }
    assert send(mock, "POST", "/fal/run/fal-ai/injected", JSON, b"{}").status == 404


def test_a_bodiless_post_needs_no_content_type_and_json_may_name_a_charset(mock: FalMock) -> None:
    assert send(mock, "POST", "/__falmock/reset", []).json == {"reset": True}
    headers = [("Content-Type", "Application/JSON; charset=utf-8")]
    assert send(mock, "POST", "/__falmock/fixtures", headers, DOC.encode()).status == 201


def test_control_answers_and_preflights_grant_no_origin(mock: FalMock) -> None:
    for method, target in [
        ("GET", "/__falmock/health"),
        ("GET", "/__falmock/nope"),
        ("GET", "/__falmock/reset"),
    ]:
        answer = send(mock, method, target, [])
        assert answer.status in (200, 404, 405)
        assert not any(name.startswith("access-control-") for name in answer.headers), answer
    preflight = send(mock, "OPTIONS", "/__falmock/fixtures", [("Access-Control-Request-Method", "POST")])
    assert preflight.status == 204
    assert not any(name.startswith("access-control-") for name in preflight.headers)


def test_even_a_refused_control_request_gets_no_cors_grant() -> None:
    with FalMock(max_body=64) as mock:
        too_large = send(mock, "POST", "/__falmock/fixtures", JSON, b"[" * 65)
        unsupported = send(mock, "POST", "/__falmock/reset", [("Transfer-Encoding", "gzip")], b"")
        fal = send(mock, "POST", f"/fal/run/{FLUX}", JSON, b"[" * 65)
    assert (too_large.status, unsupported.status, fal.status) == (413, 501, 413)
    for answer in (too_large, unsupported):
        assert not any(name.startswith("access-control-") for name in answer.headers), answer
    assert fal.headers["access-control-allow-origin"] == "*"  # a browser app may read its 413


def test_fal_routes_keep_cors_for_browser_apps(mock: FalMock) -> None:
    answer = send(mock, "POST", f"/fal/run/{FLUX}", [("Origin", PAGE), *JSON], b"{}")
    assert (answer.status, answer.json) == (200, {"ok": 1})
    assert answer.headers["access-control-allow-origin"] == "*"
    preflight = send(mock, "OPTIONS", f"/fal/run/{FLUX}", [("Origin", PAGE)])
    assert (preflight.status, preflight.headers["access-control-allow-origin"]) == (204, "*")


# -- uploads ------------------------------------------------------------------------------------
def _initiate(mock: FalMock, name: str = "cat.png", content_type: str = "image/png") -> str:
    body = json.dumps({"file_name": name, "content_type": content_type}).encode()
    answer = send(mock, "POST", "/fal/rest/storage/upload/initiate", JSON, body)
    return urlsplit(answer.json["upload_url"]).path


def test_a_put_goes_only_to_an_upload_url_the_mock_issued_and_only_once(mock: FalMock) -> None:
    never = send(
        mock, "PUT", "/fal/files/0123456789abcdef/cat.png", [("Content-Type", "text/html")], b"<script>"
    )
    assert never.status == 404
    assert never.json["detail"].startswith("No upload URL /fal/files/0123456789abcdef/cat.png was issued")
    path = _initiate(mock)
    first = send(mock, "PUT", path, [("Content-Type", "image/png")], b"PNG")
    assert first.status == 200
    again = send(mock, "PUT", path, [("Content-Type", "text/html")], b"<script>")
    assert again.status == 409
    assert again.json["detail"] == f"{path} already holds an upload: each upload URL takes one PUT"
    served = send(mock, "GET", path, [])
    assert (served.body, served.headers["content-type"]) == (b"PNG", "image/png")
    assert [u.data for u in mock.uploads] == [b"PNG"]


def test_a_put_without_content_type_keeps_the_declared_one(mock: FalMock) -> None:
    path = _initiate(mock, "a.mp3", "audio/mpeg")
    assert send(mock, "PUT", path, [], b"ID3").status == 200
    assert mock.uploads[0].content_type == "audio/mpeg"


def test_issued_upload_urls_do_not_outlive_a_reset(mock: FalMock) -> None:
    path = _initiate(mock)
    mock.reset()
    assert send(mock, "PUT", path, [], b"late").status == 404


def test_a_served_upload_never_runs_as_a_page_of_the_mock(mock: FalMock) -> None:
    headers = [("Content-Type", "text/html"), ("X-Fal-File-Name", "page.html")]
    url = send(
        mock, "POST", "/fal/cdn/files/upload", headers, b"<script>fetch('/__falmock/requests')</script>"
    )
    served = send(mock, "GET", urlsplit(url.json["access_url"]).path, [])
    assert served.headers["content-type"] == "text/html"
    assert served.headers["content-security-policy"] == "sandbox"
    assert served.headers["x-content-type-options"] == "nosniff"


# -- where it listens ---------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match=r"name the interface to bind, e\.g\. 127\.0\.0\.1"):
        FalMock(host=host)


def test_cli_refuses_an_empty_host() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest_falmock", "--host", "", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "--host must name an interface, e.g. 127.0.0.1" in run.stderr


def test_binding_a_non_loopback_address_warns_naming_the_risk() -> None:
    text = exposure_warning("0.0.0.0", 4005)
    assert text is not None
    assert text.startswith(
        "fal_mock is listening on every network interface (port 4005), not only on this machine"
    )
    assert "spend your fal credits" in text
    assert exposure_warning("192.168.1.5", 1) is not None
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(loopback, 1) is None


def test_falmock_start_warns_for_a_non_loopback_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    mock = FalMock(host="0.0.0.0")
    monkeypatch.setattr(mock._server, "start", lambda: None)  # no socket: the test binds nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FalMockWarning)
        mock.start()
    ours = [w for w in caught if issubclass(w.category, FalMockWarning)]
    assert len(ours) == 1
    assert "fal_mock is listening on every network interface" in str(ours[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FalMockWarning)  # only ours: a stray ResourceWarning is not
        FalMock().start().stop()  # loopback: silent
