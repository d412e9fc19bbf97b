"""The seed's queue lifecycle table, over real HTTP, with the exact shapes of issue 2."""

from __future__ import annotations

import re
import uuid

import pytest
from httpclient import http

MODEL = "fal-ai/flux/dev"
PAYLOAD = {"images": [{"url": "https://example.com/cat.png"}]}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def submit(fal_mock, model=MODEL, body=None):
    return http("POST", f"{fal_mock.url}/queue/{model}", {"prompt": "a cat"} if body is None else body)


def test_submit_envelope_points_back_at_the_mock(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    res = submit(fal_mock)
    assert res.status == 200
    assert res.headers["Content-Type"] == "application/json"
    body = res.json
    rid = body["request_id"]
    assert UUID.match(rid)
    base = f"{fal_mock.url}/queue/fal-ai/flux/requests/{rid}"
    assert body == {
        "request_id": rid,
        "status_url": base + "/status",
        "response_url": base,
        "cancel_url": base + "/cancel",
        "queue_position": 0,
        "status": "IN_QUEUE",
    }
    assert res.headers["x-fal-request-id"] == rid


def test_request_ids_are_fresh(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    ids = {submit(fal_mock).json["request_id"] for _ in range(5)}
    assert len(ids) == 5


def test_default_job_is_completed_at_submit(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    status = http("GET", env["status_url"])
    assert status.status == 200
    assert status.headers["Content-Type"] == "application/json"
    assert status.headers["x-fal-request-id"] == env["request_id"]
    body = status.json
    assert list(body) == ["status", "request_id", "response_url", "logs", "metrics"]
    assert body["status"] == "COMPLETED"
    assert body["request_id"] == env["request_id"]
    assert body["response_url"] == env["response_url"]
    assert body["metrics"] == {"inference_time": 0.0}
    assert [entry["message"] for entry in body["logs"]] == ["Job enqueued.", "Job completed."]
    for entry in body["logs"]:
        assert set(entry) == {"timestamp", "level", "source", "message"}
        assert (entry["level"], entry["source"]) == ("INFO", "user")
    result = http("GET", env["response_url"])
    assert result.status == 200
    assert result.json == PAYLOAD
    assert result.headers["x-fal-request-id"] == env["request_id"]


def test_completed_status_is_stable(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    first = http("GET", env["status_url"]).json
    assert http("GET", env["status_url"]).json == first
    assert http("GET", env["response_url"]).json == http("GET", env["response_url"]).json


@pytest.mark.fal_queue(polls_before_in_progress=1, polls_before_completed=2)
def test_polling_sequence_matches_the_seed_example(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    assert env["queue_position"] == 1
    assert env["status"] == "IN_QUEUE"

    early = http("GET", env["response_url"])  # result before completion: status body, 202
    assert early.status == 202
    assert early.json["status"] == "IN_QUEUE"
    assert early.json["queue_position"] == 1

    first = http("GET", env["status_url"] + "?logs=1")
    assert first.status == 202
    assert first.json["status"] == "IN_PROGRESS"
    assert first.json["queue_position"] == 0
    assert "metrics" not in first.json
    assert [e["message"] for e in first.json["logs"]] == ["Job enqueued.", "Job started processing."]

    second = http("GET", env["status_url"] + "?logs=1")
    assert second.status == 200
    assert second.json["status"] == "COMPLETED"
    assert "queue_position" not in second.json
    assert isinstance(second.json["metrics"]["inference_time"], float)
    assert second.json["metrics"]["inference_time"] >= 0
    assert [e["message"] for e in second.json["logs"]] == [
        "Job enqueued.",
        "Job started processing.",
        "Job completed.",
    ]
    assert http("GET", env["response_url"]).json == PAYLOAD


@pytest.mark.fal_queue(polls_before_in_progress=3)
def test_queue_position_decays_per_poll(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    assert env["queue_position"] == 3
    seen = []
    for _ in range(5):
        body = http("GET", env["status_url"]).json
        seen.append((body["status"], body.get("queue_position")))
    assert seen == [
        ("IN_QUEUE", 2),
        ("IN_QUEUE", 1),
        ("IN_PROGRESS", 0),
        ("COMPLETED", None),
        ("COMPLETED", None),
    ]


@pytest.mark.fal_queue(polls=3)
def test_only_status_calls_advance_a_job(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    for _ in range(4):
        assert http("GET", env["response_url"]).status == 202
    states = [http("GET", env["status_url"]).json["status"] for _ in range(3)]
    assert states == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]


@pytest.mark.fal_queue(polls=2)
def test_head_on_a_status_url_does_not_advance_the_job(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    for _ in range(3):
        head = http("HEAD", env["status_url"])
        assert (head.status, head.body) == (202, b"")
        assert head.headers["x-fal-request-id"] == env["request_id"]
    states = [http("GET", env["status_url"]).json["status"] for _ in range(2)]
    assert states == ["IN_PROGRESS", "COMPLETED"]
    assert http("HEAD", env["status_url"]).status == 200
    assert [(r.method, r.status_code) for r in fal_mock.requests[1:]] == [
        *[("HEAD", 202)] * 3,
        ("GET", 202),
        ("GET", 200),
        ("HEAD", 200),
    ]


@pytest.mark.fal_queue(polls=2)
def test_cancel_before_completion(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    cancel = http("PUT", env["cancel_url"])
    assert cancel.status == 200
    assert cancel.json == {"status": "CANCELLED"}
    assert cancel.headers["Content-Type"] == "application/json"
    for _ in range(2):
        status = http("GET", env["status_url"])
        assert status.status == 200
        assert status.json["status"] == "COMPLETED"
        assert status.json["error"] == "Request was cancelled"
        assert status.json["error_type"] == "request_cancelled"
        assert status.json["logs"][-1]["message"] == "Job cancelled."
    result = http("GET", env["response_url"])
    assert result.status == 400
    assert result.json == {"detail": "Request was cancelled", "error_type": "request_cancelled"}
    assert result.headers["x-fal-error-type"] == "request_cancelled"
    again = http("PUT", env["cancel_url"])
    assert again.status == 400
    assert again.json == {"status": "ALREADY_COMPLETED"}


def test_cancel_after_completion(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    env = submit(fal_mock).json
    cancel = http("PUT", env["cancel_url"])
    assert cancel.status == 400
    assert cancel.json == {"status": "ALREADY_COMPLETED"}
    assert http("GET", env["response_url"]).json == PAYLOAD


@pytest.mark.parametrize("suffix", ["", "/status", "/cancel"])
def test_unknown_request_id_is_404(fal_mock, suffix):
    rid = str(uuid.uuid4())
    method = "PUT" if suffix == "/cancel" else "GET"
    res = http(method, f"{fal_mock.url}/queue/fal-ai/flux/requests/{rid}{suffix}")
    assert res.status == 404
    assert res.json == {"detail": f"Request {rid} not found"}
    assert fal_mock.unmatched == []  # unknown ids are not "unmatched"


def test_malformed_json_submit(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    res = http(
        "POST",
        f"{fal_mock.url}/queue/{MODEL}",
        raw=b'{"prompt": ',
        headers={"Content-Type": "application/json"},
    )
    assert res.status == 400
    assert res.headers["Content-Type"] == "application/json"
    error = res.json["error"]
    assert error["code"] == "invalid_json"
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Malformed JSON")
    assert fal_mock.unmatched == []
    # nothing was lost: the next good request is served
    assert submit(fal_mock).status == 200


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", b"[" * 100_000, b"nul"])
def test_bad_bodies_are_400_not_500(fal_mock, raw):
    fal_mock.on_queue(MODEL, PAYLOAD)
    res = http("POST", f"{fal_mock.url}/run/{MODEL}", raw=raw)
    assert res.status == 400
    assert res.json["error"]["code"] == "invalid_json"


def test_empty_body_is_null_input(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD, match_input=lambda value: value is None)
    res = http("POST", f"{fal_mock.url}/queue/{MODEL}")
    assert res.status == 200
    assert fal_mock.requests[-1].input is None


def test_sync_run_skips_the_queue(fal_mock):
    fal_mock.on_run("fal-ai/whisper", {"text": "Hello world"})
    res = http("POST", f"{fal_mock.url}/run/fal-ai/whisper", {"audio_url": "https://x/a.mp3"})
    assert res.status == 200
    assert res.json == {"text": "Hello world"}
    assert res.headers["Content-Type"] == "application/json"
    assert UUID.match(res.headers["x-fal-request-id"])
    assert "request_id" not in res.json


def test_unmatched_submit_is_404_naming_the_model(fal_mock):
    res = submit(fal_mock, model="fal-ai/unknown/model")
    assert res.status == 404
    assert res.json["detail"] == "fal_mock: no fixture matches model 'fal-ai/unknown/model' (queue request)"
    assert res.json["model"] == "fal-ai/unknown/model"
    assert len(fal_mock.unmatched) == 1
    fal_mock.unmatched.clear()  # a copy: clearing it changes nothing
    assert len(fal_mock.unmatched) == 1
    fal_mock.reset()  # this test meant it


def test_error_fixture_from_response_status(fal_mock):
    fal_mock.on_error(
        MODEL, status=422, detail=[{"loc": ["body", "prompt"], "msg": "too long", "type": "value_error"}]
    )
    env = submit(fal_mock).json
    status = http("GET", env["status_url"]).json
    assert status["status"] == "COMPLETED"
    assert status["error"] == "Request failed with status code 422"
    assert status["error_type"] == "http_error"
    result = http("GET", env["response_url"])
    assert result.status == 422
    assert result.json == {"detail": [{"loc": ["body", "prompt"], "msg": "too long", "type": "value_error"}]}
    assert result.headers["x-fal-request-id"] == env["request_id"]
