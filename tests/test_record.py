"""Record & replay, in process: a FalMock with a recorder against a fake fal upstream on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import KEY, Make
from fake_fal_upstream import FakeFal
from httpclient import http

from pytest_falmock import FalMock
from pytest_falmock._constants import DUMMY_FAL_KEY, REDACTED
from pytest_falmock._record import Recorder, UpstreamError
from pytest_falmock._secrets import Credentials


def document(path: Path) -> Any:
    return json.loads(path.read_text())


def flux_entry(seed: int, prompt: str = "a cat") -> dict[str, Any]:
    image = {"url": f"https://images.example/fake/{seed}.png", "width": 512, "height": 512}
    return {
        "match": {"endpoint": "fal", "input": {"prompt": prompt}, "model": "fal-ai/flux/dev"},
        "response": {"json": {"images": [image], "prompt": prompt, "seed": seed}},
    }


# -- queue ------------------------------------------------------------------------------------
def test_queue_submit_walks_the_upstream_and_serves_the_local_lifecycle(
    make: Make, fake: FakeFal, target: Path
) -> None:
    mock = make()
    submitted = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a cat"})
    assert submitted.status == 200
    envelope = submitted.json
    assert envelope["status"] == "IN_QUEUE"
    assert envelope["status_url"].startswith(mock.url + "/queue/fal-ai/flux/requests/")
    assert envelope["request_id"] not in fake.jobs  # a local id, never the upstream one

    status = http("GET", envelope["status_url"])
    assert (status.status, status.json["status"]) == (200, "COMPLETED")
    result = http("GET", envelope["response_url"])
    assert result.status == 200
    assert result.json == flux_entry(1)["response"]["json"]

    upstream_id = next(iter(fake.jobs))
    assert [(r.method, r.host, r.path) for r in fake.requests] == [
        ("POST", "queue.fal.run", "/fal-ai/flux/dev"),
        ("GET", "queue.fal.run", f"/jobs/{upstream_id}/status"),
        ("GET", "queue.fal.run", f"/jobs/{upstream_id}/status"),
        ("GET", "queue.fal.run", f"/jobs/{upstream_id}/status"),
        ("GET", "queue.fal.run", f"/jobs/{upstream_id}"),
    ]
    assert json.loads(fake.requests[0].body) == {"prompt": "a cat"}
    assert document(target) == {"fixtures": [flux_entry(1)]}


def test_the_file_is_sorted_indented_json(make: Make, target: Path) -> None:
    mock = make()
    http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "b"})
    http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a"})
    expected = {"fixtures": [flux_entry(1, "b"), flux_entry(2, "a")]}
    assert target.read_text() == json.dumps(expected, indent=2, sort_keys=True) + "\n"
    assert not list(target.parent.glob("*.tmp"))


def test_a_recorded_request_is_served_locally_the_next_time(make: Make, fake: FakeFal, target: Path) -> None:
    mock = make()
    first = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a cat"}).json
    seen = len(fake.requests)
    second = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a cat"}).json
    assert len(fake.requests) == seen
    assert http("GET", second["response_url"]).json == http("GET", first["response_url"]).json
    assert len(document(target)["fixtures"]) == 1


def test_replay_from_the_written_file_needs_no_upstream(make: Make, fake: FakeFal, target: Path) -> None:
    mock = make()
    recorded = http("POST", f"{mock.url}/run/fal-ai/flux/dev", {"prompt": "a cat"}).json
    fake.stop()
    with FalMock() as replay:
        replay.load_fixtures(target)
        replay.queue(polls=2)
        envelope = http("POST", f"{replay.url}/queue/fal-ai/flux/dev", {"prompt": "a cat"}).json
        assert http("GET", envelope["status_url"]).json["status"] == "IN_PROGRESS"
        assert http("GET", envelope["status_url"]).json["status"] == "COMPLETED"
        assert http("GET", envelope["response_url"]).json == recorded
    fake.start()  # the fixture stops it again


def test_recorded_jobs_follow_the_local_polling_realism(make: Make) -> None:
    mock = make()
    mock.queue(polls_before_in_progress=1, polls_before_completed=2)
    envelope = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "a cat"}).json
    assert envelope["queue_position"] == 1
    states = [http("GET", envelope["status_url"]).json["status"] for _ in range(3)]
    assert states == ["IN_PROGRESS", "COMPLETED", "COMPLETED"]


# -- sync run ---------------------------------------------------------------------------------
def test_sync_run_is_forwarded_once_and_recorded(make: Make, fake: FakeFal, target: Path) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/run/fal-ai/fast-sdxl", {"prompt": "a tree"})
    assert answer.status == 200
    assert answer.json == {
        "images": [{"url": "https://images.example/fake/1.png", "width": 512, "height": 512}],
        "prompt": "a tree",
        "seed": 1,
    }
    assert [(r.method, r.host, r.path) for r in fake.requests] == [("POST", "fal.run", "/fal-ai/fast-sdxl")]
    assert document(target)["fixtures"] == [
        {
            "match": {"endpoint": "fal", "input": {"prompt": "a tree"}, "model": "fal-ai/fast-sdxl"},
            "response": {"json": answer.json},
        }
    ]
    again = http("POST", f"{mock.url}/run/fal-ai/fast-sdxl", {"prompt": "a tree"})
    assert (again.status, again.json, len(fake.requests)) == (200, answer.json, 1)


def test_routing_headers_pick_the_upstream_host_and_query(make: Make, fake: FakeFal) -> None:
    mock = make()
    answer = http(
        "POST",
        mock.url,
        {"prompt": "x"},
        headers={
            "x-fal-target-url": "https://fal.run/fake/echo?sync_mode=1&fal_webhook=http://127.0.0.1:9/h"
        },
    )
    assert answer.status == 200
    seen = fake.requests[0]
    assert (seen.host, seen.path, seen.query) == ("fal.run", "/fake/echo", "sync_mode=1")
    assert seen.headers["X-Fal-Target-Host"] == "fal.run"


# -- errors -----------------------------------------------------------------------------------
VALIDATION = [{"loc": ["body", "prompt"], "msg": "prompt is too long", "type": "value_error"}]


def test_upstream_4xx_result_is_recorded_and_replayed_as_an_error_job(
    make: Make, fake: FakeFal, target: Path
) -> None:
    mock = make()
    envelope = http("POST", f"{mock.url}/queue/fake/error", {"prompt": "long"}).json
    status = http("GET", envelope["status_url"]).json
    assert status["status"] == "COMPLETED"
    assert status["error_type"] == "validation_error"
    result = http("GET", envelope["response_url"])
    # the file keeps fal's body as sent; every error answer carries its error_type in the body
    replayed = {"detail": VALIDATION, "error_type": "validation_error"}
    assert (result.status, result.json) == (422, replayed)
    assert document(target)["fixtures"] == [
        {
            "match": {"endpoint": "fal", "input": {"prompt": "long"}, "model": "fake/error"},
            "response": {"error_type": "validation_error", "json": {"detail": VALIDATION}, "status": 422},
        }
    ]
    fake.requests.clear()
    with FalMock() as replay:
        replay.load_fixtures(target)
        again = http("POST", f"{replay.url}/queue/fake/error", {"prompt": "long"}).json
        assert http("GET", again["status_url"]).json["error_type"] == "validation_error"
        assert http("GET", again["response_url"]).status == 422
        run = http("POST", f"{replay.url}/run/fake/error", {"prompt": "long"})
        assert (run.status, run.json) == (422, replayed)
    assert fake.requests == []


def test_upstream_4xx_at_submit_and_on_a_run_are_recorded(make: Make, target: Path) -> None:
    mock = make()
    envelope = http("POST", f"{mock.url}/queue/fake/submit-error", {}).json
    assert http("GET", envelope["response_url"]).status == 422
    run = http("POST", f"{mock.url}/run/fake/error", {"prompt": "p"})
    assert run.status == 422
    entries = document(target)["fixtures"]
    assert [(e["match"]["model"], e["response"]["status"]) for e in entries] == [
        ("fake/submit-error", 422),
        ("fake/error", 422),
    ]


@pytest.mark.parametrize("service", ["queue", "run"])
def test_every_upstream_4xx_is_recorded_as_an_error(make: Make, target: Path, service: str) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/{service}/fake/unauthorized", {"prompt": "p"})
    if service == "queue":
        assert answer.status == 200
        answer = http("GET", answer.json["response_url"])
    assert answer.status == 401
    (entry,) = document(target)["fixtures"]
    assert entry["match"]["model"] == "fake/unauthorized"
    assert entry["response"]["status"] == 401
    assert KEY not in target.read_text()


@pytest.mark.parametrize("service", ["queue", "run"])
@pytest.mark.parametrize(
    ("model", "named"),
    [
        ("fake/server-error", "answered HTTP 50"),
        ("fake/html", "non-JSON body (text/html"),
    ],
)
def test_upstream_failures_give_502_and_write_nothing(
    make: Make, target: Path, service: str, model: str, named: str
) -> None:
    mock = make()
    answer = http("POST", f"{mock.url}/{service}/{model}", {"prompt": "p"})
    assert answer.status == 502
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json["error_type"] == "upstream_error"
    assert answer.json["detail"].startswith(f"fal_mock could not record {model!r}: upstream ")
    assert named in answer.json["detail"]
    assert KEY not in answer.body.decode()
    assert not target.exists()
    assert mock.unmatched == []


def test_connection_refused_gives_502(make: Make, target: Path) -> None:
    with FalMock() as closed:
        dead = closed.base_url  # a port nobody listens on once this block ends
    mock = make(upstream=dead)
    answer = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {"prompt": "p"})
    assert answer.status == 502
    assert f"upstream POST {dead}/fal-ai/flux/dev failed" in answer.json["detail"]
    assert "Connection refused" in answer.json["detail"]
    assert not target.exists()


def test_a_timeout_gives_502(make: Make, target: Path) -> None:
    mock = make(request_timeout=0.3)
    answer = http("POST", f"{mock.url}/run/fake/slow", {"prompt": "p"})
    assert answer.status == 502
    assert "timed out" in answer.json["detail"]
    assert not target.exists()


# -- credentials and secrets ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        (None, f"Key {KEY}"),
        (f"Key {DUMMY_FAL_KEY}", f"Key {KEY}"),
        ("Key caller-own-key-000000", "Key caller-own-key-000000"),
        ("Bearer some-jwt-token-abc", "Bearer some-jwt-token-abc"),
    ],
)
def test_authorization_sent_upstream(make: Make, fake: FakeFal, sent: Optional[str], forwarded: str) -> None:
    mock = make()
    headers = {"Authorization": sent} if sent else {}
    assert http("POST", f"{mock.url}/run/fake/echo", {"prompt": "p"}, headers=headers).status == 200
    assert fake.requests[0].headers["Authorization"] == forwarded


def test_without_a_captured_key_the_dummy_key_is_dropped(make: Make, fake: FakeFal) -> None:
    mock = make(key=None)
    headers = {"Authorization": f"Key {DUMMY_FAL_KEY}"}
    http("POST", f"{mock.url}/run/fal-ai/flux/dev", {"prompt": "p"}, headers=headers)
    assert "Authorization" not in fake.requests[0].headers


def test_nothing_secret_is_written(make: Make, fake: FakeFal, target: Path) -> None:
    mock = make()
    webhook = "http://127.0.0.1:9/hook?token=webhook-secret"
    envelope = http("POST", f"{mock.url}/queue/fake/echo?fal_webhook={webhook}&x=1", {"prompt": "p"}).json
    http(
        "POST",
        f"{mock.url}/run/fake/echo",
        {"prompt": "q"},
        headers={"Authorization": "Key caller-own-key-000000"},
    )
    assert "fal_webhook" not in fake.requests[0].query  # the mock delivers webhooks itself
    text = target.read_text()
    for secret in (
        KEY,
        "s3cr3t-value-9876543210",
        "fk-abcdef123456",
        "caller-own-key-000000",
        "webhook-secret",
    ):
        assert secret not in text
    result = http("GET", envelope["response_url"]).json
    assert result["authorization"] == f"Key {REDACTED}"
    assert result["note"] == f"called with Key {REDACTED}"


def test_credentials_come_from_fal_key_or_its_parts() -> None:
    assert Credentials.from_env({"FAL_KEY": "abc:defghijk"}).key == "abc:defghijk"
    assert Credentials.from_env({"FAL_KEY_ID": "id-1", "FAL_KEY_SECRET": "secret-2"}).key == "id-1:secret-2"
    assert Credentials.from_env({"FAL_KEY": DUMMY_FAL_KEY}).key is None
    assert Credentials.from_env({}).key is None
    assert "secret" not in repr(Credentials.from_env({"FAL_KEY_ID": "id-1", "FAL_KEY_SECRET": "secret-2"}))


def test_without_an_upstream_override_requests_go_to_the_real_fal_hosts(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No socket is opened: the recorder's fetch is replaced."""
    calls: list[tuple[str, str, dict[str, str]]] = []

    def fetch(self: Recorder, method: str, url: str, headers: dict[str, str], body: Optional[bytes]) -> Any:
        calls.append((method, url, dict(headers)))
        raise UpstreamError("offline")

    monkeypatch.setattr(Recorder, "_fetch", fetch)
    mock = make(upstream=None)
    http("POST", f"{mock.url}/queue/fal-ai/flux/dev?fal_webhook=http://x/&a=b", {"prompt": "p"})
    http("POST", f"{mock.url}/fal-ai/flux/dev", {"prompt": "p"}, headers={"x-fal-target-host": "fal.run"})
    assert [(m, u) for m, u, _ in calls] == [
        ("POST", "https://queue.fal.run/fal-ai/flux/dev?a=b"),
        ("POST", "https://fal.run/fal-ai/flux/dev"),
    ]
    assert all("x-fal-target-host" not in {k.lower() for k in h} for _, _, h in calls)
