"""Nothing a test started leaks into the next one: slow requests, webhook deliveries."""

from __future__ import annotations

import pytest
from httpclient import http
from inner_runs import QUIET

from pytest_falmock import FalMock

INNER = """
import json, socket, time, urllib.request, urllib.error
import pytest
import pytest_falmock._webhooks as webhooks

webhooks.DELIVERY_TIMEOUT = 0.5  # the receiver below never answers
SILENT = socket.socket()
SILENT.bind(("127.0.0.1", 0))
SILENT.listen(8)
HOOK = "http://127.0.0.1:%d/hook" % SILENT.getsockname()[1]


def post(url, body, timeout=10.0):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


@pytest.mark.fal_mock(virtual_time=False)  # the slow run really waits
def test_1_leaves_work_behind(fal_mock):
    fal_mock.on_queue("fal-ai/hook", {"ok": True})
    fal_mock.on_run("fal-ai/slow", {"ok": True}, latency=0.5)
    assert post(fal_mock.url + "/queue/fal-ai/hook?fal_webhook=" + HOOK, {}).status == 200
    with pytest.raises(OSError):  # our client gives up; the server is still working on it
        post(fal_mock.url + "/run/fal-ai/slow", {}, timeout=0.2)


def test_2_sees_none_of_it(fal_mock):
    time.sleep(1.0)  # the slow run answers and the webhook times out meanwhile
    assert fal_mock.requests == []
    assert fal_mock.unmatched == []
    assert fal_mock.webhooks == []
"""


def test_late_work_of_a_finished_test_is_dropped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    pytester.runpytest(*QUIET).assert_outcomes(passed=2)


def test_webhook_outcome_is_recorded_within_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner=INNER.split("def test_1")[0]
        + """
def test_stuck_receiver_is_reported_as_failed(fal_mock):
    fal_mock.on_queue("fal-ai/hook", {"ok": True})
    post(fal_mock.url + "/queue/fal-ai/hook?fal_webhook=" + HOOK, {})
    (delivery,) = fal_mock.webhooks  # waits for the delivery under way
    assert delivery.outcome == "failed"
    assert "timed out" in delivery.error
"""
    )
    pytester.runpytest(*QUIET).assert_outcomes(passed=1)


@pytest.mark.parametrize("host", ["queue.fal.run", "fal.run:443", "REST.FAL.AI"])
def test_urls_never_point_at_fal_whatever_the_host_header(host: str) -> None:
    with FalMock(allow_hosts=["queue.fal.run", "fal.run", "rest.fal.ai"]) as mock:
        mock.on_queue("fal-ai/flux/dev", {})
        env = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {}, headers={"Host": host}).json
        assert env["status_url"].startswith(mock.url + "/queue/fal-ai/flux/requests/")


def test_urls_follow_an_allowed_non_fal_host_header() -> None:
    with FalMock(allow_hosts=["falmock"]) as mock:
        mock.on_queue("fal-ai/flux/dev", {})
        env = http("POST", f"{mock.url}/queue/fal-ai/flux/dev", {}, headers={"Host": "falmock:4005"}).json
        assert env["status_url"].startswith("http://falmock:4005/fal/queue/")
