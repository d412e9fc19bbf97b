"""Registering responses: helpers, defaults, matching rules, order, times, the journal."""

from __future__ import annotations

import re

import pytest
from httpclient import http

from pytest_falmock import FalMock

MODEL = "fal-ai/flux/dev"


def run(mock, model=MODEL, body=None):
    return http("POST", f"{mock.url}/run/{model}", {"prompt": "a cat"} if body is None else body)


def queue_result(mock, model=MODEL, body=None):
    env = http("POST", f"{mock.url}/queue/{model}", {"prompt": "a cat"} if body is None else body)
    if env.status != 200:
        return env
    return http("GET", env.json["response_url"])


def test_on_queue_serves_the_raw_payload_on_both_routes(fal_mock):
    payload = {"anything": [1, {"nested": None}], "seed": 42}
    fal_mock.on_queue(MODEL, payload)
    assert queue_result(fal_mock).json == payload
    assert run(fal_mock).json == payload


def test_on_image_fills_fal_defaults(fal_mock):
    fal_mock.on_image(
        MODEL,
        {
            "images": [
                {"url": "https://cdn.example/a.JPG?sig=1#frag"},
                {"url": "https://cdn.example/b.jpeg"},
                {"url": "https://cdn.example/c.webp"},
                {"url": "https://cdn.example/d.png"},
                {"url": "https://cdn.example/e"},
                {"url": "https://cdn.example/f.gif"},
            ]
        },
    )
    body = queue_result(fal_mock).json
    assert [img["content_type"] for img in body["images"]] == [
        "image/jpeg",
        "image/jpeg",
        "image/webp",
        "image/png",
        "image/png",
        "image/gif",
    ]
    assert all(img["width"] == 1024 and img["height"] == 1024 for img in body["images"])
    assert body["images"][0]["url"] == "https://cdn.example/a.JPG?sig=1#frag"
    assert body["has_nsfw_concepts"] == [False] * 6
    assert body["timings"] == {"inference": 0}
    assert body["seed"] == 0
    assert body["prompt"] == "a cat"


def test_on_image_caller_values_win_and_prompt_echo(fal_mock):
    fal_mock.on_image(
        MODEL,
        {
            "images": [{"url": "https://x/a.png", "width": 512, "content_type": "image/avif"}],
            "seed": 7,
            "has_nsfw_concepts": [True],
            "timings": {"inference": 1.5},
        },
        route="run",
    )
    body = run(fal_mock, body={"image_size": "square"}).json
    assert body == {
        "images": [{"url": "https://x/a.png", "width": 512, "height": 1024, "content_type": "image/avif"}],
        "timings": {"inference": 1.5},
        "seed": 7,
        "has_nsfw_concepts": [True],
        "prompt": "",
    }
    fal_mock.on_image("fal-ai/fixed", {"images": [], "prompt": "fixed"})
    assert run(fal_mock, "fal-ai/fixed").json["prompt"] == "fixed"


def test_on_video_fills_fal_defaults(fal_mock):
    fal_mock.on_video("fal-ai/kling", {"video": {"url": "https://cdn.example/v/clip.webm?x=1"}})
    fal_mock.on_video("fal-ai/kling-2", {"video": {"url": "https://cdn.example/clip"}, "seed": 3})
    fal_mock.on_video("fal-ai/kling-3", {"video": {"url": "https://cdn.example/a.mov", "file_size": 10}})
    assert queue_result(fal_mock, "fal-ai/kling").json == {
        "video": {
            "url": "https://cdn.example/v/clip.webm?x=1",
            "content_type": "video/webm",
            "file_name": "clip.webm",
            "file_size": 0,
        },
        "seed": 0,
    }
    second = run(fal_mock, "fal-ai/kling-2").json
    assert second["video"]["content_type"] == "video/mp4"
    assert second["video"]["file_name"] == "clip"
    assert second["seed"] == 3
    third = run(fal_mock, "fal-ai/kling-3").json["video"]
    assert (third["content_type"], third["file_size"]) == ("video/quicktime", 10)


def test_route_restriction(fal_mock):
    fal_mock.on_queue(MODEL, {"via": "queue"}, route="queue")
    fal_mock.on_run(MODEL, {"via": "run"}, route="run")
    assert queue_result(fal_mock).json == {"via": "queue"}
    assert run(fal_mock).json == {"via": "run"}


def test_regex_model_is_searched(fal_mock):
    fal_mock.on_queue(re.compile(r"flux"), {"hit": True})
    assert run(fal_mock, "fal-ai/flux-pro/v1.1").json == {"hit": True}
    assert run(fal_mock, "fal-ai/whisper").status == 404
    fal_mock.reset()


def test_str_model_is_exact(fal_mock):
    fal_mock.on_queue("fal-ai/flux", {"hit": True})
    assert run(fal_mock, "fal-ai/flux/dev").status == 404
    assert run(fal_mock, "fal-ai/flux").status == 200
    fal_mock.reset()


def test_match_input_dict_is_a_subset(fal_mock):
    fal_mock.on_queue(MODEL, {"which": "square"}, match_input={"image_size": {"width": 512}})
    fal_mock.on_queue(MODEL, {"which": "cat"}, match_input={"prompt": "a cat"})
    assert run(fal_mock, body={"prompt": "a cat", "seed": 1}).json == {"which": "cat"}
    assert run(fal_mock, body={"prompt": "x", "image_size": {"width": 512, "height": 512}}).json == {
        "which": "square"
    }
    assert run(fal_mock, body={"prompt": "dog"}).status == 404
    assert run(fal_mock, body=["not", "a", "dict"]).status == 404
    fal_mock.reset()


def test_match_input_callable(fal_mock):
    def boom(value):
        raise RuntimeError("kaput")

    fal_mock.on_queue(MODEL, {"big": True}, match_input=lambda v: v.get("num_images", 1) > 2)
    fal_mock.on_queue(MODEL, {"never": True}, match_input=boom)
    assert run(fal_mock, body={"num_images": 4}).json == {"big": True}
    miss = run(fal_mock, body={"num_images": 1})
    assert miss.status == 404
    reasons = fal_mock.unmatched[0].reasons
    assert [reason for _, reason in reasons] == [
        "match_input raised RuntimeError('kaput')",
        "match_input callable returned False",
    ]
    assert reasons[0][0].startswith("on_queue('fal-ai/flux/dev') at test_registering.py:")
    fal_mock.reset()


def test_times_then_stop_matching(fal_mock):
    fal_mock.on_queue(MODEL, {"n": "fallback"})
    fal_mock.on_queue(MODEL, {"n": "first two"}, times=2)
    got = [run(fal_mock).json["n"] for _ in range(3)]
    assert got == ["first two", "first two", "fallback"]


def test_newest_per_test_fixture_wins_then_files_in_order(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(
        '{"fixtures": ['
        '{"match": {"model": "fal-ai/file"}, "response": {"json": {"from": "file-1"}}},'
        '{"match": {"model_regex": "file"}, "response": {"json": {"from": "file-2"}}}]}'
    )
    # A private mock: load_fixtures() adds session fixtures, which would outlive this test.
    with FalMock() as mock:
        assert mock.load_fixtures(path) == 2
        assert run(mock, "fal-ai/file").json == {"from": "file-1"}
        assert run(mock, "fal-ai/file-b").json == {"from": "file-2"}
        mock.on_queue(re.compile("file"), {"from": "older"})
        mock.on_queue(re.compile("file"), {"from": "newer"})
        assert run(mock, "fal-ai/file").json == {"from": "newer"}
        mock.reset()  # per-test fixtures go, file fixtures stay
        assert run(mock, "fal-ai/file").json == {"from": "file-1"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.on_queue(42, {}), "model must be a str or a compiled re.Pattern"),
        (lambda m: m.on_queue("", {}), "model must not be empty"),
        (lambda m: m.on_queue(MODEL, {}, route="both"), "route must be 'queue', 'run' or None"),
        (lambda m: m.on_queue(MODEL, {}, times=0), "times must be a positive integer"),
        (lambda m: m.on_queue(MODEL, {}, latency=-1), "latency must be a non-negative number"),
        (lambda m: m.on_queue(MODEL, {"x": object()}), "payload must be JSON-serialisable"),
        (lambda m: m.on_run(MODEL, {"x": float("nan")}), "payload must be JSON-serialisable"),
        (lambda m: m.on_queue(MODEL, {}, match_input=[1]), "match_input must be a dict or a callable"),
        (lambda m: m.on_image(MODEL, {"images": "x"}), "'images' must be a list"),
        (lambda m: m.on_video(MODEL, {"video": "x"}), "'video' must be a dict"),
        (lambda m: m.on_error(MODEL, status=200), "status must be an HTTP error code"),
    ],
)
def test_bad_registrations_fail_at_once(fal_mock, call, message):
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        call(fal_mock)


def test_queue_at_runtime(fal_mock):
    fal_mock.on_queue(MODEL, {"ok": True})
    fal_mock.queue(polls=2)
    env = http("POST", f"{fal_mock.url}/queue/{MODEL}", {}).json
    assert env["queue_position"] == 1
    states = [http("GET", env["status_url"]).json["status"] for _ in range(2)]
    assert states == ["IN_PROGRESS", "COMPLETED"]
    with pytest.raises(ValueError, match=r"fal_mock.queue\(\): polls cannot be combined"):
        fal_mock.queue(polls=1, polls_before_completed=2)


def test_assert_called(fal_mock):
    fal_mock.on_queue(re.compile("."), {"ok": True})
    run(fal_mock)
    queue_result(fal_mock)
    http("POST", f"{fal_mock.url}/run/fal-ai/whisper", {})
    fal_mock.assert_called(MODEL)
    fal_mock.assert_called(MODEL, times=2)
    fal_mock.assert_called(re.compile("whisper"), times=1)
    with pytest.raises(AssertionError) as info:
        fal_mock.assert_called(MODEL, times=3)
    text = str(info.value)
    assert text.startswith("fal_mock.assert_called('fal-ai/flux/dev', times=3): expected 3 calls, got 2.")
    assert "POST /fal/run/fal-ai/flux/dev (route=run" in text
    assert "Other model calls:" in text
    with pytest.raises(AssertionError, match=r"expected at least one call, got 0"):
        fal_mock.assert_called("fal-ai/nothing")


def test_state_does_not_leak_between_tests_part_1(fal_mock):
    fal_mock.on_queue("fal-ai/leak", {"leak": True})
    fal_mock.queue(polls=5)
    assert run(fal_mock, "fal-ai/leak").status == 200


def test_state_does_not_leak_between_tests_part_2(fal_mock):
    assert fal_mock.requests == []
    fal_mock.on_queue(MODEL, {})
    env = http("POST", f"{fal_mock.url}/queue/{MODEL}", {}).json
    assert env["queue_position"] == 0  # queue config was reset
    assert run(fal_mock, "fal-ai/leak").status == 404  # per-test fixture gone
    fal_mock.reset()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("https://fal.run/fal-ai/whisper", "it names the host fal.run; use 'fal-ai/whisper'"),
        ("queue.fal.run/fal-ai/flux/dev", "it names the host queue.fal.run; use 'fal-ai/flux/dev'"),
        ("/fal-ai/whisper", "it starts or ends with '/'; use 'fal-ai/whisper'"),
        ("fal-ai/whisper/", "it starts or ends with '/'; use 'fal-ai/whisper'"),
        (" fal-ai/whisper\n", "it contains whitespace; use 'fal-ai/whisper'"),
        ("fal-ai/whi sper", "it contains whitespace (ids look like 'fal-ai/flux/dev')"),
        ("fal-ai//whisper", "it has an empty path segment ('//'); use 'fal-ai/whisper'"),
        ("https://fal.run/", "it names the host fal.run; name the model, e.g. 'fal-ai/flux/dev'"),
    ],
)
def test_a_malformed_model_id_is_refused_at_registration_with_the_fix(fal_mock, model, message):
    with pytest.raises(
        ValueError, match=re.escape(f"fal_mock.on_run(): {model!r} is not a fal model id: {message}")
    ):
        fal_mock.on_run(model, {"text": "hi"})
    with pytest.raises(ValueError, match=re.escape(message)):
        fal_mock.add_fixture_document({"fixtures": [{"match": {"model": model}, "response": {"json": {}}}]})
    assert fal_mock.requests == []


@pytest.mark.parametrize(
    "model", ["fal-ai/whisper", "fal-ai/flux/dev", "workflows/owner/app/x", "legacy-app"]
)
def test_well_formed_model_ids_register(fal_mock, model):
    fal_mock.on_run(model, {"ok": True})
    assert run(fal_mock, model).json == {"ok": True}
