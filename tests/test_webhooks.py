"""Webhooks: ``submit(webhook_url=...)`` makes the mock POST fal's webhook body on completion.

The receiver is a real HTTP server on 127.0.0.1. Non-loopback hosts are never contacted: the
"allowed remote" tests map a made-up host name to 127.0.0.1 in-process, so nothing leaves the
machine and no DNS query is made.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import fal_client
import httpx
import pytest
from fal_client import FalClientHTTPError
from inner_runs import QUIET
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from pytest_falmock import FalMock, WebhookDelivery

FLUX = "fal-ai/flux/dev"
VALIDATION = [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]
REMOTE_HOST = "hooks.example.test"
BLOCKED_HOST = "webhook.invalid"


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Resolve ``REMOTE_HOST`` to 127.0.0.1 in-process; record every host name looked up."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        if host == BLOCKED_HOST:
            raise AssertionError("the mock must never contact a blocked webhook host")
        return real("127.0.0.1" if host == REMOTE_HOST else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


def outcomes(mock: FalMock) -> list[str]:
    return [d.outcome for d in mock.webhooks]


def received(server: HTTPServer) -> list[Any]:
    return [json.loads(request.get_data()) for request, _ in server.log]


# -- delivery -------------------------------------------------------------------------------------
def test_completed_job_posts_the_ok_webhook(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"images": []})
    url = receiver.url_for("/hook")

    handle = fal_client.submit(FLUX, {"prompt": "cat"}, webhook_url=url)

    body = {
        "request_id": handle.request_id,
        "gateway_request_id": handle.request_id,
        "status": "OK",
        "payload": {"images": []},
    }
    assert fal_mock.webhooks == [WebhookDelivery(url, handle.request_id, body, "delivered", status_code=200)]
    (delivery,) = fal_mock.webhooks
    (request, _) = receiver.log[0]
    assert delivery.data == request.get_data()
    assert {name: request.headers[name] for name in delivery.headers} == delivery.headers
    assert received(receiver) == [body]
    assert request.headers["Content-Type"] == "application/json"
    assert {name.lower() for name in delivery.headers} == {
        "content-type",
        "user-agent",
        "x-fal-webhook-request-id",
        "x-fal-webhook-user-id",
        "x-fal-webhook-timestamp",
        "x-fal-webhook-signature",
    }
    assert fal_mock.requests[0].query == {"fal_webhook": url}


def test_a_slow_job_posts_its_webhook_once_the_mock_clock_passes_its_latency(
    fal_mock: FalMock, receiver: HTTPServer
) -> None:
    fal_mock.on_queue(FLUX, {"images": []}, latency=60)
    url = receiver.url_for("/hook")
    handle = fal_client.submit(FLUX, {"prompt": "cat"}, webhook_url=url)
    assert fal_mock.webhooks == []  # nobody polls: the job waits for its latency

    fal_mock.advance(60)

    assert outcomes(fal_mock) == ["delivered"]
    assert received(receiver)[0]["request_id"] == handle.request_id
    assert handle.status().metrics["inference_time"] >= 60


def test_the_webhook_url_keeps_its_own_query_string(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    url = receiver.url_for("/hook") + "?user=7&kind=a%20b"

    fal_client.submit(FLUX, {}, webhook_url=url)

    (delivery,) = fal_mock.webhooks
    assert (delivery.url, delivery.outcome) == (url, "delivered")
    (request, _) = receiver.log[0]
    assert request.args.to_dict() == {"user": "7", "kind": "a b"}


def test_an_invalid_webhook_url_is_recorded_as_failed(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    url = receiver.url_for("/hook") + "?kind=a b"

    fal_client.submit(FLUX, {}, webhook_url=url)

    assert [(d.url, d.outcome, d.error) for d in fal_mock.webhooks] == [
        (
            url,
            "failed",
            "InvalidURL: URL can't contain control characters. '/hook?kind=a b' (found at least ' ')",
        )
    ]
    assert receiver.log == []


@pytest.mark.fal_queue(polls=2)
def test_the_webhook_fires_when_the_job_completes_not_at_submit(
    fal_mock: FalMock, receiver: HTTPServer
) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    handle = fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/hook"))

    assert fal_mock.webhooks == []
    assert handle.get() == {"n": 1}
    assert [d.body["status"] for d in fal_mock.webhooks] == ["OK"]
    assert received(receiver)[0]["payload"] == {"n": 1}


def test_delivery_runs_on_a_background_thread(fal_mock: FalMock, receiver: HTTPServer) -> None:
    """The receiver holds the delivery until submit has returned: a synchronous send would deadlock."""
    submitted = threading.Event()
    seen: list[bool] = []

    def hold(request: Request) -> Response:
        seen.append(submitted.wait(timeout=5))
        return Response("ok")

    receiver.expect_request("/slow-hook", method="POST").respond_with_handler(hold)
    fal_mock.on_queue(FLUX, {"n": 1})
    fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/slow-hook"))
    submitted.set()  # a delivery made inside submit would have given up waiting for this

    assert [(d.outcome, d.status_code) for d in fal_mock.webhooks] == [("delivered", 200)]
    assert seen == [True]


def test_failed_job_posts_the_error_webhook(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_error(FLUX, status=422, detail=VALIDATION)
    handle = fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/hook"))
    with pytest.raises(FalClientHTTPError):
        handle.get()

    assert [d.outcome for d in fal_mock.webhooks] == ["delivered"]  # waits for the delivery thread
    assert received(receiver) == [
        {
            "request_id": handle.request_id,
            "gateway_request_id": handle.request_id,
            "status": "ERROR",
            "payload": {"detail": VALIDATION},
            "error": "Invalid status code: 422",
        }
    ]


@pytest.mark.fal_queue(polls=3)
def test_cancelled_job_posts_an_error_webhook(fal_mock: FalMock, receiver: HTTPServer) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    handle = fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/hook"))
    handle.cancel()

    (delivery,) = fal_mock.webhooks
    assert delivery.body == {
        "request_id": handle.request_id,
        "gateway_request_id": handle.request_id,
        "status": "ERROR",
        "payload": {"detail": "Request was cancelled"},
        "error": "Request was cancelled",
    }
    assert received(receiver) == [delivery.body]


def test_receiver_errors_are_recorded_with_their_status(fal_mock: FalMock, receiver: HTTPServer) -> None:
    receiver.expect_request("/broken-hook").respond_with_data("nope", status=500)
    fal_mock.on_queue(FLUX, {"n": 1})

    fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/broken-hook"))

    assert [(d.outcome, d.status_code, d.error) for d in fal_mock.webhooks] == [("delivered", 500, None)]


@pytest.mark.parametrize("where", ["/stolen", f"http://{BLOCKED_HOST}/stolen"])
def test_a_redirect_is_the_delivery_s_status_never_followed(
    fal_mock: FalMock, receiver: HTTPServer, lookups: list[str], where: str
) -> None:
    location = receiver.url_for(where) if where.startswith("/") else where
    receiver.expect_request("/moved").respond_with_data("", status=302, headers={"Location": location})
    receiver.expect_request("/stolen").respond_with_json({"stolen": True})
    fal_mock.on_queue(FLUX, {"n": 1})

    fal_client.submit(FLUX, {}, webhook_url=receiver.url_for("/moved"))

    assert [(d.outcome, d.status_code, d.error) for d in fal_mock.webhooks] == [("delivered", 302, None)]
    assert [request.path for request, _ in receiver.log] == ["/moved"]
    assert BLOCKED_HOST not in lookups


@pytest.mark.filterwarnings("ignore::pytest_falmock.FalMockWarning")
@pytest.mark.parametrize("host", ["evil.localhost", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_only_loopback_literals_and_localhost_count_as_loopback(
    fal_mock: FalMock, lookups: list[str], host: str
) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    fal_client.submit(FLUX, {}, webhook_url=f"http://{host}:9/hook")

    assert [d.outcome for d in fal_mock.webhooks] == ["blocked"]
    assert host not in lookups  # decided without resolving the name


def test_unreachable_receiver_is_recorded_as_failed(fal_mock: FalMock) -> None:
    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fal_mock.on_queue(FLUX, {"n": 1})
    fal_client.submit(FLUX, {}, webhook_url=f"http://127.0.0.1:{port}/hook")

    (delivery,) = fal_mock.webhooks
    assert (delivery.outcome, delivery.status_code) == ("failed", None)
    assert delivery.error is not None
    assert delivery.error.startswith("URLError: ")
    assert "Connection refused" in delivery.error


def test_a_non_http_webhook_url_is_recorded_as_failed(fal_mock: FalMock) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    fal_client.submit(FLUX, {}, webhook_url="ftp://127.0.0.1/hook")

    assert [(d.outcome, d.error) for d in fal_mock.webhooks] == [("failed", "unsupported URL scheme 'ftp'")]


# -- remote hosts ---------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::pytest_falmock.FalMockWarning")  # reported at teardown, tested below
def test_non_loopback_webhooks_are_blocked_and_never_contacted(fal_mock: FalMock, lookups: list[str]) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    handle = fal_client.submit(FLUX, {}, webhook_url="http://webhook.invalid/hook")

    (delivery,) = fal_mock.webhooks
    assert (delivery.url, delivery.request_id, delivery.outcome) == (
        "http://webhook.invalid/hook",
        handle.request_id,
        "blocked",
    )
    assert delivery.status_code is None
    assert delivery.error == (
        "not a loopback URL; enable with @pytest.mark.fal_mock(allow_remote_webhooks=True)"
    )
    assert delivery.body["status"] == "OK"
    assert "webhook.invalid" not in lookups


@pytest.mark.fal_mock(allow_remote_webhooks=True)
def test_allow_remote_webhooks_marker_delivers_to_other_hosts(
    fal_mock: FalMock, receiver: HTTPServer, lookups: list[str]
) -> None:
    fal_mock.on_queue(FLUX, {"n": 1})
    url = f"http://{REMOTE_HOST}:{receiver.port}/hook"

    handle = fal_client.submit(FLUX, {}, webhook_url=url)

    assert [(d.url, d.outcome, d.status_code) for d in fal_mock.webhooks] == [(url, "delivered", 200)]
    assert received(receiver)[0]["request_id"] == handle.request_id
    assert receiver.log[0][0].headers["Host"] == f"{REMOTE_HOST}:{receiver.port}"
    assert REMOTE_HOST in lookups


@pytest.mark.parametrize("allowed", [False, True])
def test_falmock_constructor_allow_remote_webhooks(
    receiver: HTTPServer, lookups: list[str], allowed: bool
) -> None:
    url = f"http://{REMOTE_HOST}:{receiver.port}/hook"
    with FalMock(allow_remote_webhooks=allowed) as mock:
        mock.on_queue(FLUX, {"n": 1})
        reply = httpx.post(
            f"{mock.url}/queue/{FLUX}", params={"fal_webhook": url}, json={"prompt": "cat"}, trust_env=False
        )
        assert reply.status_code == 200
        assert outcomes(mock) == (["delivered"] if allowed else ["blocked"])
        mock.reset()  # the constructor's setting survives a reset
        httpx.post(f"{mock.url}/queue/{FLUX}", params={"fal_webhook": url}, json={}, trust_env=False)
        assert outcomes(mock) == []  # reset also dropped the fixture: the submit matched nothing
        mock.on_queue(FLUX, {"n": 2})
        httpx.post(f"{mock.url}/queue/{FLUX}", params={"fal_webhook": url}, json={}, trust_env=False)
        assert outcomes(mock) == (["delivered"] if allowed else ["blocked"])
    assert len(receiver.log) == (2 if allowed else 0)


def test_a_blocked_webhook_is_reported_as_a_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import json, urllib.request

def test_remote_hook(fal_mock):
    fal_mock.on_queue("fal-ai/x", {})
    req = urllib.request.Request(
        fal_mock.url + "/queue/fal-ai/x?fal_webhook=https%3A%2F%2Fhooks.example.com%2Fh",
        data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
"""
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*FalMockWarning: fal_mock: the webhook of request * to https://hooks.example.com/h was not "
            "delivered: not a loopback URL; enable with @pytest.mark.fal_mock(allow_remote_webhooks=True)"
        ]
    )
