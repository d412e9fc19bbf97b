"""Plugin glue, tested the way users meet it: pytester runs with exact output."""

from __future__ import annotations

import json

import pytest
from inner_runs import QUIET

from pytest_falmock import FalMock, FalMockUsageError
from pytest_falmock._jobs import QueueConfig
from pytest_falmock._settings import queue_config

HELPERS = """
import json, urllib.request, urllib.error
import pytest

def post(url, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

def get(url):
    try:
        with urllib.request.urlopen(url) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, *args)


def literal(text: str) -> str:
    """Escape fnmatch's ``[`` so messages with ``fixtures[0]`` match literally."""
    return text.replace("[", "[[]")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, QueueConfig(0, 0)),
        ({"polls": 0}, QueueConfig(0, 0)),
        ({"polls": 1}, QueueConfig(0, 1)),
        ({"polls": 2}, QueueConfig(1, 2)),
        ({"polls": 5}, QueueConfig(1, 5)),
        ({"polls_before_in_progress": 2}, QueueConfig(2, 3)),
        ({"polls_before_in_progress": 0}, QueueConfig(0, 1)),
        ({"polls_before_completed": 3}, QueueConfig(0, 3)),
        ({"polls_before_completed": 0}, QueueConfig(0, 1)),
        ({"polls_before_in_progress": 1, "polls_before_completed": 2}, QueueConfig(1, 2)),
        ({"polls_before_in_progress": 3, "polls_before_completed": 1}, QueueConfig(3, 4)),
        ({"polls_before_in_progress": 1, "polls_before_completed": 1}, QueueConfig(1, 2)),
        ({"polls_before_in_progress": 3, "polls_before_completed": 5}, QueueConfig(3, 5)),
    ],
)
def test_polling_table(kwargs, expected):
    assert queue_config("m", **kwargs) == expected


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            (),
            {"polls": 2, "polls_before_completed": 3},
            "m: polls cannot be combined with polls_before_completed",
        ),
        (
            (),
            {"polls": 2, "polls_before_in_progress": 1},
            "m: polls cannot be combined with polls_before_in_progress",
        ),
        ((), {"polls": -1}, "m: polls must be a non-negative integer, got -1"),
        ((), {"polls": 1.5}, "m: polls must be a non-negative integer, got 1.5"),
        ((), {"polls": True}, "m: polls must be a non-negative integer, got True"),
        (
            (),
            {"polls_before_completed": "2"},
            "m: polls_before_completed must be a non-negative integer, got '2'",
        ),
        ((), {"pols": 2}, "m: unknown keyword 'pols'"),
        ((2,), {}, "m: takes keyword arguments only"),
    ],
)
def test_polling_usage_errors(args, kwargs, message):
    with pytest.raises(FalMockUsageError) as info:
        queue_config("m", args, **kwargs)
    assert str(info.value).startswith(message)


def test_entry_point_gives_the_fixture_without_conftest(pytester):
    pytester.makepyfile(
        HELPERS
        + """
def test_it(fal_mock):
    fal_mock.on_queue("fal-ai/flux/dev", {"images": []})
    assert fal_mock.url.startswith("http://127.0.0.1:") and fal_mock.url.endswith("/fal")
    status, body = post(fal_mock.url + "/queue/fal-ai/flux/dev", {"prompt": "x"})
    assert status == 200
    assert get(body["response_url"]) == (200, {"images": []})
"""
    )
    run(pytester).assert_outcomes(passed=1)


def test_markers_are_registered(pytester):
    pytester.makepyfile(
        """
import pytest

@pytest.mark.fal_queue(polls=2)
@pytest.mark.fal_mock(allow_unmatched=True)
def test_it():
    pass
"""
    )
    run(pytester, "--strict-markers").assert_outcomes(passed=1)
    markers = pytester.runpytest(*QUIET, "--markers")
    markers.stdout.fnmatch_lines(
        [
            "@pytest.mark.fal_mock(allow_unmatched=False, patch_client=True, allow_remote_webhooks=False, "
            "virtual_time=True): *",
            "@pytest.mark.fal_queue(polls=None, polls_before_in_progress=None, "
            "polls_before_completed=None): *",
        ]
    )


def test_one_server_per_session_reset_between_tests(pytester):
    pytester.makepyfile(
        HELPERS
        + """
SEEN = {}

def test_first(fal_mock):
    SEEN["url"] = fal_mock.url
    fal_mock.on_queue("fal-ai/a", {"a": 1})
    fal_mock.queue(polls=3)
    assert post(fal_mock.url + "/run/fal-ai/a", {})[0] == 200

def test_second(fal_mock):
    assert fal_mock.url == SEEN["url"]
    assert fal_mock.requests == []
    assert fal_mock.unmatched == []
    fal_mock.on_queue("fal-ai/b", {"b": 1})
    status, env = post(fal_mock.url + "/queue/fal-ai/b", {})
    assert env["queue_position"] == 0
    assert post(fal_mock.url + "/run/fal-ai/a", {})[0] == 404
    fal_mock.reset()
"""
    )
    run(pytester).assert_outcomes(passed=2)


def test_marker_alone_switches_the_fixture_on(pytester):
    pytester.makepyfile(
        HELPERS
        + """
import pytest

@pytest.mark.fal_queue(polls=2)
def test_queue_marker(request):
    assert "fal_mock" in request.fixturenames
    mock = request.getfixturevalue("fal_mock")
    mock.on_queue("fal-ai/x", {})
    assert post(mock.url + "/queue/fal-ai/x", {})[1]["queue_position"] == 1

@pytest.mark.fal_mock
def test_mock_marker(request):
    assert "fal_mock" in request.fixturenames

def test_without_marker(request):
    assert "fal_mock" not in request.fixturenames
"""
    )
    run(pytester).assert_outcomes(passed=3)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "fal_queue(pols=2)",
            "@pytest.mark.fal_queue: unknown keyword 'pols' "
            "(expected one of: polls, polls_before_in_progress, polls_before_completed)",
        ),
        (
            "fal_queue(polls=2, polls_before_completed=3)",
            "@pytest.mark.fal_queue: polls cannot be combined with polls_before_completed; "
            "give either polls=N or the two thresholds",
        ),
        ("fal_queue(polls=-2)", "@pytest.mark.fal_queue: polls must be a non-negative integer, got -2"),
        (
            "fal_queue(polls_before_in_progress=0.5)",
            "@pytest.mark.fal_queue: polls_before_in_progress must be a non-negative integer, got 0.5",
        ),
        (
            "fal_queue(2)",
            "@pytest.mark.fal_queue: takes keyword arguments only "
            "(polls, polls_before_in_progress, polls_before_completed), got positional (2,)",
        ),
        (
            "fal_mock(allow_unmached=True)",
            "@pytest.mark.fal_mock: unknown keyword 'allow_unmached' "
            "(expected one of: allow_unmatched, patch_client, allow_remote_webhooks, virtual_time)",
        ),
        (
            "fal_mock(patch_client='no')",
            "@pytest.mark.fal_mock: patch_client must be True or False, got 'no'",
        ),
    ],
)
def test_marker_misuse_errors_that_test_only(pytester, marker, message):
    pytester.makepyfile(
        f"""
import pytest

@pytest.mark.{marker}
def test_bad(fal_mock):
    pass

def test_good(fal_mock):
    pass
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*_ ERROR at setup of test_bad _*", message])
    assert "During handling" not in result.stdout.str()


def test_marker_levels_merge_closest_wins(pytester):
    pytester.makepyfile(
        HELPERS
        + """
import pytest

pytestmark = [pytest.mark.fal_mock(allow_unmatched=True), pytest.mark.fal_queue(polls=4)]

def test_module_level(fal_mock):
    assert post(fal_mock.url + "/run/fal-ai/none", {})[0] == 404
    fal_mock.on_queue("fal-ai/x", {})
    assert post(fal_mock.url + "/queue/fal-ai/x", {})[1]["queue_position"] == 1

@pytest.mark.fal_mock(allow_unmatched=False)
@pytest.mark.fal_queue(polls_before_in_progress=3)
def test_closest_wins(fal_mock):
    fal_mock.on_queue("fal-ai/x", {})
    assert post(fal_mock.url + "/queue/fal-ai/x", {})[1]["queue_position"] == 3
    assert post(fal_mock.url + "/run/fal-ai/none", {})[0] == 404
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_closest_wins*"])


def test_unmatched_request_fails_the_test_at_teardown(pytester):
    pytester.makepyfile(
        HELPERS
        + """
import re

def test_unmatched(fal_mock):
    fal_mock.on_image("fal-ai/flux/schnell", {"images": []})
    fal_mock.on_queue(re.compile("kling"), {}, route="run")
    status, body = post(fal_mock.url + "/queue/fal-ai/flux/dev", {"prompt": "a cat", "seed": 3})
    assert status == 404
    assert body["detail"] == "fal_mock: no fixture matches model 'fal-ai/flux/dev' (queue request)"

def test_next_test_is_clean(fal_mock):
    assert fal_mock.unmatched == []
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_unmatched _*",
            "fal_mock: 1 request matched no registered fixture:",
            "",
            "- POST /fal/queue/fal-ai/flux/dev (route queue.submit, model 'fal-ai/flux/dev')",
            '  input: {"prompt": "a cat", "seed": 3}',
            "  registered fixtures:",
            "    * on_queue(re.compile('kling'), route='run') at "
            "test_unmatched_request_fails_the_test_at_teardown.py:*: route='run', request is a queue request",
            "    * on_image('fal-ai/flux/schnell') at test_unmatched_request_fails_the_test_at_teardown.py:*:"
            " model 'fal-ai/flux/schnell' != 'fal-ai/flux/dev'",
            "",
            "If these requests are expected, register a fixture for them, or mark the test with "
            "@pytest.mark.fal_mock(allow_unmatched=True).",
        ],
        consecutive=True,
    )


def test_unmatched_with_no_fixtures_and_two_requests(pytester):
    pytester.makepyfile(
        HELPERS
        + """
def test_unmatched(fal_mock):
    post(fal_mock.url + "/run/fal-ai/a", None)
    post(fal_mock.url + "/run/fal-ai/b", {"x": 1})
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "fal_mock: 2 requests matched no registered fixture:",
            "",
            "- POST /fal/run/fal-ai/a (route run, model 'fal-ai/a')",
            "  input: null",
            "  no fixtures were registered",
            "",
            "- POST /fal/run/fal-ai/b (route run, model 'fal-ai/b')",
            '  input: {"x": 1}',
            "  no fixtures were registered",
        ],
        consecutive=True,
    )


def test_allow_unmatched(pytester):
    pytester.makepyfile(
        HELPERS
        + """
import pytest

@pytest.mark.fal_mock(allow_unmatched=True)
def test_it(fal_mock):
    assert post(fal_mock.url + "/run/fal-ai/a", {})[0] == 404
    assert len(fal_mock.unmatched) == 1
"""
    )
    run(pytester).assert_outcomes(passed=1)


def test_bad_requests_and_unknown_ids_are_not_unmatched(pytester):
    pytester.makepyfile(
        HELPERS
        + """
def test_it(fal_mock):
    assert get(fal_mock.url + "/queue/fal-ai/x/requests/nope/status")[0] == 404
    assert get(fal_mock.url + "/queue/fal-ai/x")[0] == 405
    assert post(fal_mock.url + "/nowhere", {})[0] == 404
"""
    )
    run(pytester).assert_outcomes(passed=1)


FILE = {
    "fixtures": [
        {
            "match": {"model": "fal-ai/flux/dev", "endpoint": "fal"},
            "response": {"json": {"images": [{"url": "https://example.com/result.png"}]}},
        },
        {"match": {"model_regex": "whisper", "route": "run"}, "response": {"json": {"text": "hi"}}},
        {
            "match": {"model": "fal-ai/bad", "input": {"prompt": "fail"}},
            "response": {"status": 422, "json": {"detail": [{"msg": "nope"}]}},
        },
    ]
}

USES_FILE = (
    HELPERS
    + """
def test_uses_file(fal_mock):
    status, env = post(fal_mock.url + "/queue/fal-ai/flux/dev", {"prompt": "x"})
    assert get(env["response_url"]) == (200, {"images": [{"url": "https://example.com/result.png"}]})
    assert post(fal_mock.url + "/run/openai/whisper-v3", {}) == (200, {"text": "hi"})
    assert post(fal_mock.url + "/run/fal-ai/bad", {"prompt": "fail"}) == (422, {"detail": [{"msg": "nope"}]})
    status, env = post(fal_mock.url + "/queue/fal-ai/bad", {"prompt": "fail"})
    status, body = get(env["status_url"])
    assert body["status"] == "COMPLETED" and body["error_type"] == "http_error"
    assert get(env["response_url"]) == (422, {"detail": [{"msg": "nope"}]})

def test_file_fixtures_stay_for_the_session(fal_mock):
    assert post(fal_mock.url + "/run/fal-ai/flux/dev", {})[0] == 200
"""
)


def test_fal_fixtures_option_file_relative_to_invocation_dir(pytester):
    pytester.mkdir("data")
    (pytester.path / "data" / "fal.json").write_text(json.dumps(FILE))
    pytester.makepyfile(USES_FILE)
    run(pytester, "--fal-fixtures", "data/fal.json").assert_outcomes(passed=2)


def test_fal_fixtures_option_directory_and_repeatable(pytester):
    pytester.mkdir("dir")
    (pytester.path / "dir" / "b.json").write_text(json.dumps({"fixtures": FILE["fixtures"][1:]}))
    (pytester.path / "dir" / "a.json").write_text(json.dumps({"fixtures": FILE["fixtures"][:1]}))
    (pytester.path / "dir" / "notes.txt").write_text("ignored")
    (pytester.path / "extra.json").write_text(
        json.dumps({"fixtures": [{"match": {"model": "x/y"}, "response": {"json": {"extra": True}}}]})
    )
    pytester.makepyfile(
        USES_FILE
        + """
def test_extra(fal_mock):
    assert post(fal_mock.url + "/run/x/y", {}) == (200, {"extra": True})
"""
    )
    run(pytester, "--fal-fixtures", "dir", "--fal-fixtures", "extra.json").assert_outcomes(passed=3)


def test_fal_fixtures_ini_relative_to_ini_file(pytester):
    pytester.mkdir("conf")
    (pytester.path / "conf" / "fal.json").write_text(json.dumps(FILE))
    (pytester.path / "conf" / "pytest.ini").write_text("[pytest]\nfal_fixtures = fal.json\n")
    pytester.makepyfile(USES_FILE)
    run(pytester, "-c", "conf/pytest.ini", "--rootdir", str(pytester.path)).assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "fal fixture file {path}: invalid JSON: *"),
        ('{"fixture": []}', 'fal fixture file {path}: expected an object with a "fixtures" list, *'),
        (
            '{"fixtures": [{"match": {"model": "a"}, "response": {"json": {}}},'
            ' {"match": {}, "response": {"json": 1}}]}',
            'fal fixture file {path}: fixtures[1].match: needs exactly one of "model" or "model_regex"',
        ),
        (
            '{"fixtures": [{"match": {"model": "a", "endpoint": "openai"}, "response": {"json": {}}}]}',
            "fal fixture file {path}: fixtures[0].match.endpoint: must be \"fal\", got 'openai'",
        ),
        (
            '{"fixtures": [{"match": {"model": "a", "modle": 1}, "response": {"json": {}}}]}',
            "fal fixture file {path}: fixtures[0].match: unknown key 'modle' *",
        ),
        (
            '{"fixtures": [{"match": {"model_regex": "("}, "response": {"json": {}}}]}',
            "fal fixture file {path}: fixtures[0].match.model_regex: invalid regular expression: *",
        ),
        (
            '{"fixtures": [{"match": {"model": "a"}, "response": {"text": "x"}}]}',
            "fal fixture file {path}: fixtures[0].response: unknown key 'text' *",
        ),
        (
            '{"fixtures": [{"match": {"model": "a"}, "response": {"json": {}, "status": 99}}]}',
            "fal fixture file {path}: fixtures[0].response.status: expected an HTTP status 200-299 or "
            "400-599, got 99",
        ),
        (
            '{"fixtures": [{"match": {"model": "a"}, "response": {"json": {}, "status": 302}}]}',
            "fal fixture file {path}: fixtures[0].response.status: expected an HTTP status 200-299 or "
            "400-599, got 302",
        ),
        (
            '{"fixtures": [{"match": {"model": "a"}, "response": {"json": {"x": NaN}}}]}',
            "fal fixture file {path}: invalid JSON: NaN is not valid JSON",
        ),
        (
            '{"fixtures": [{"match": {"model": "a", "route": "both"}, "response": {"json": {}}}]}',
            "fal fixture file {path}: fixtures[0].match.route: "
            'must be "queue", "run" or "realtime", got \'both\'',
        ),
        (
            '{"fixtures": ["oops"]}',
            'fal fixture file {path}: fixtures[0]: expected an object, got "oops"',
        ),
    ],
)
def test_bad_fixture_file_is_a_usage_error(pytester, content, message):
    path = pytester.path / "bad.json"
    path.write_text(content)
    pytester.makepyfile("def test_never(): pass")
    result = run(pytester, "--fal-fixtures", "bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + literal(message.format(path=path))])


def test_missing_fixture_file_is_a_usage_error(pytester):
    pytester.makepyfile("def test_never(): pass")
    result = run(pytester, "--fal-fixtures", "nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: fal fixture file {pytester.path / 'nope.json'} does not exist"])


def test_falmock_without_pytest():
    mock = FalMock(host="127.0.0.1", port=0)
    assert not mock.is_running()
    with mock as running:
        assert running is mock
        assert mock.is_running()
        assert repr(mock) == f"<FalMock {mock.url}>"
        mock.on_run("fal-ai/x", {"ok": True})
        from httpclient import http

        assert http("POST", mock.url + "/run/fal-ai/x", {}).json == {"ok": True}
        mock.check()
        http("POST", mock.url + "/run/fal-ai/y", {})
        with pytest.raises(AssertionError, match="1 request matched no registered fixture"):
            mock.check()
    assert not mock.is_running()
    assert repr(mock) == "<FalMock stopped>"


def test_recording_against_fal_without_a_key_warns(pytester, monkeypatch):
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, "--fal-record", "--fal-fixtures", "rec.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*FalMockWarning: fal_mock is recording against the real fal.ai, but FAL_KEY * is not set*"]
    )
    monkeypatch.setenv("FAL_KEY", "a-real-looking-key")
    assert "FalMockWarning" not in run(pytester, "--fal-record", "--fal-fixtures", "rec.json").stdout.str()


def test_on_helpers_on_the_session_mock_outside_a_test_fail_at_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="session")
        def shared(fal_mock_server):
            fal_mock_server.on_run("fal-ai/whisper", {"text": "hi"})

        @pytest.fixture(scope="session")
        def shared_the_right_way(fal_mock_server):
            fal_mock_server.add_fixture_document(
                {"fixtures": [{"match": {"model": "fal-ai/whisper"}, "response": {"json": {"text": "hi"}}}]}
            )

        def test_wrong(shared):
            pass

        def test_right(shared_the_right_way, fal_mock):
            fal_mock.on_run("fal-ai/flux/dev", {"ok": True})  # inside a test: per-test, as ever
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*FalMockUsageError: fal_mock.on_run() was called outside a test, so its response would "
            "vanish at the next test's reset. For responses every test shares, use "
            'fal_mock_server.add_fixture_document({"fixtures": [[]...]}) or '
            "fal_mock_server.load_fixtures(path) (or --fal-fixtures); for one test, call on_run() "
            "inside a test that uses the fal_mock fixture.",
        ]
    )


def test_a_mock_made_by_hand_registers_any_time() -> None:
    mock = FalMock()
    mock.on_run("fal-ai/whisper", {"text": "hi"})  # no test scope outside the plugin
    mock.configure(test_stubs=False)
    with pytest.raises(FalMockUsageError, match=r"fal_mock\.on_queue\(\) was called outside a test"):
        mock.on_queue("fal-ai/whisper", {"text": "hi"})
    mock.reset()
    mock.on_queue("fal-ai/whisper", {"text": "hi"})
    with pytest.raises(TypeError, match="test_stubs must be True or False"):
        mock.configure(test_stubs="yes")
