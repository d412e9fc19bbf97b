"""Recording against a hostile upstream: no redirect followed, the key only to the upstream or
fal, answers bounded in size and time, and no form of the key in the written file."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import KEY, Make
from fake_fal_upstream import FakeFal
from httpclient import http

from pytest_falmock._constants import REDACTED

KEY_ID, KEY_SECRET = KEY.split(":")
BROWSER = {"Origin": "https://app.example", "Content-Type": "application/json"}


def upstream_paths(fake: FakeFal) -> list[str]:
    return [r.path for r in fake.requests]


# -- redirects and foreign URLs -----------------------------------------------------------------
@pytest.mark.parametrize("service", ["queue", "run"])
def test_a_redirect_is_never_followed(make: Make, fake: FakeFal, target: Path, service: str) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/{service}/fake/redirect", {"prompt": "p"})
    assert answer.status == 502
    detail = answer.json["detail"]
    assert f"answered HTTP 302 (a redirect to '{fake.other_origin}/steal')" in detail
    assert "never follows redirects" in detail
    assert upstream_paths(fake) == ["/fake/redirect"]  # /steal was never asked, with or without the key
    assert not target.exists()


def test_status_and_result_urls_on_another_origin_are_refused(
    make: Make, fake: FakeFal, target: Path
) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/queue/fake/foreign-status", {"prompt": "p"})
    assert answer.status == 502
    assert answer.json["error_type"] == "upstream_error"
    detail = answer.json["detail"]
    assert f"refused to GET {fake.other_origin}/jobs/" in detail
    assert f"{fake.other_origin} is neither the upstream nor a fal host" in detail
    assert upstream_paths(fake) == ["/fake/foreign-status"]  # submitted, then nothing fetched
    assert not target.exists()


# -- bounded answers --------------------------------------------------------------------------------
def test_an_upstream_answer_over_the_size_cap_is_refused(make: Make, target: Path) -> None:
    mock = make(max_answer=1024)
    answer = http("POST", f"{mock.url}/run/fake/huge", {"prompt": "p"})
    assert answer.status == 502
    assert "the answer body exceeds the 1024-byte limit" in answer.json["detail"]
    assert not target.exists()


def test_an_upstream_that_trickles_is_cut_off_by_the_total_timeout(make: Make, target: Path) -> None:
    """Each byte comes well within the timeout; only the bound on the whole exchange stops it."""
    mock = make(request_timeout=0.5)
    answer = http("POST", f"{mock.url}/run/fake/trickle", {"prompt": "p"})
    assert answer.status == 502
    assert "timed out after 0.5 s" in answer.json["detail"]
    assert not target.exists()


# -- browser pages --------------------------------------------------------------------------------
def test_a_foreign_page_is_never_forwarded_but_replays_what_was_recorded(
    make: Make, fake: FakeFal, target: Path
) -> None:
    mock = make()
    refused = http("POST", f"{mock.url}/run/fal-ai/flux/dev", {"prompt": "p"}, headers=BROWSER)
    assert refused.status == 403
    assert refused.json["error_type"] == "origin_refused"
    assert "from the web page at Origin 'https://app.example' to fal" in refused.json["detail"]
    assert fake.requests == []
    assert not target.exists()

    local = {"Origin": "http://localhost:5173"}
    recorded = http("POST", f"{mock.url}/run/fal-ai/flux/dev", {"prompt": "p"}, headers=local)
    assert recorded.status == 200
    assert len(fake.requests) == 1
    replayed = http("POST", f"{mock.url}/run/fal-ai/flux/dev", {"prompt": "p"}, headers=BROWSER)
    assert (replayed.status, replayed.json) == (200, recorded.json)
    assert replayed.headers["Access-Control-Allow-Origin"] == "*"
    assert len(fake.requests) == 1


def test_a_cross_site_request_without_origin_is_not_forwarded(make: Make, fake: FakeFal) -> None:
    """A no-cors GET (an ``<img>``) carries no Origin, but its Sec-Fetch-Site gives it away."""
    mock = make()
    answer = http("GET", f"{mock.url}/run/fal-ai/flux/dev?prompt=p", headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status == 403
    assert "cross-site web page" in answer.json["detail"]
    assert fake.requests == []


# -- secrets ----------------------------------------------------------------------------------------
def _decoded_base64_runs(text: str) -> list[bytes]:
    """Every base64-looking run of ``text``, decoded at each of its four possible offsets."""
    out = []
    for run in re.findall(r"[A-Za-z0-9+/_=-]{8,}", text):
        for start in range(4):
            piece = run[start:].rstrip("=")
            piece = piece[: len(piece) - len(piece) % 4]
            for altchars in (b"+/", b"-_"):
                with contextlib.suppress(binascii.Error, ValueError):
                    out.append(base64.b64decode(piece, altchars=altchars, validate=False))
    return out


def assert_no_trace(text: str, secret: str) -> None:
    """No form of ``secret`` in ``text``: as is, any case, percent-encoded (twice), base64."""
    lowered = secret.lower()
    assert lowered not in text.lower()
    assert lowered not in unquote(text).lower()
    assert lowered not in unquote(unquote(text)).lower()
    assert lowered not in unquote(text.replace("+", " ")).lower()
    wanted = lowered.encode()
    assert not [raw for raw in _decoded_base64_runs(text) if wanted in raw.lower()]


@pytest.mark.parametrize("service", ["queue", "run"])
def test_no_form_of_the_key_reaches_the_written_file(
    make: Make, fake: FakeFal, target: Path, service: str
) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/{service}/fake/leak", {"prompt": f"my key is {KEY.upper()}"})
    if service == "queue":
        answer = http("GET", answer.json["response_url"])
    assert answer.status == 422
    assert fake.requests[0].headers["Authorization"] == f"Key {KEY}"  # the upstream did get it...
    text = target.read_text()
    (entry,) = json.loads(text)["fixtures"]
    assert REDACTED in entry["response"]["error_type"]  # ...and echoed it in x-fal-error-type
    assert entry["match"]["input"] == {"prompt": f"my key is {REDACTED}"}
    for secret in (KEY, KEY_ID, KEY_SECRET):
        assert_no_trace(text, secret)
        assert_no_trace(answer.body.decode(), secret)  # what the client gets is the recording


def test_the_caller_s_own_key_is_redacted_in_every_form_too(make: Make, target: Path) -> None:
    own = "caller-0000aaaa:caller-secret-1111bbbb"
    mock = make(key=None)
    answer = http("POST", f"{mock.url}/run/fake/leak", {}, headers={"Authorization": f"Key {own}"})
    assert answer.status == 422
    text = target.read_text()
    for secret in (own, *own.split(":")):
        assert_no_trace(text, secret)


def test_the_leak_fixture_really_carries_every_encoding(fake: FakeFal) -> None:
    """The checks above would pass against an upstream that leaks nothing: this one does leak."""
    headers = {"x-fal-target-host": "fal.run", "Authorization": f"Key {KEY}"}
    body = http("POST", f"{fake.url}/fake/leak", {}, headers=headers).body.decode()
    for secret in (KEY, KEY_ID, KEY_SECRET):
        with pytest.raises(AssertionError):
            assert_no_trace(body, secret)
        assert secret.upper() in body
    for shift in ("", "a", "ab"):
        assert base64.b64encode(f"{shift}Key {KEY}!".encode()).decode() in body


def test_a_media_file_carrying_the_key_is_never_written(make: Make, fake: FakeFal, target: Path) -> None:
    """Media files are written next to the fixture file: they are held to the same rule."""
    clean = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    leaky = clean[:8] + b"\x00" * 70_000 + base64.b64encode(f"ab{KEY.upper()}".encode()) + clean[8:]
    fake.media = {"clean.png": (clean, "image/png"), "leaky.png": (leaky, "image/png")}
    mock = make()
    envelope = http("POST", f"{mock.url}/queue/fake/media", {"prompt": "p"}).json
    assert http("GET", envelope["response_url"]).status == 200
    (entry,) = json.loads(target.read_text())["fixtures"]
    assert list(entry["media"]) == [f"{fake.url}/media/clean.png"]  # the leaky one keeps its URL
    (note,) = mock.take_warnings()
    assert note == (
        f"fal_mock recorded {fake.url}/media/leaky.png as a URL, not its bytes: its bytes carry "
        "your fal key (in some form), never written"
    )
    for written in target.parent.rglob("*"):
        if written.is_file():
            assert_no_trace(written.read_bytes().decode("latin-1"), KEY)
