"""One router, one set of semantics: every accepted wire form reaches the same engine."""

from __future__ import annotations

import pytest
from httpclient import http

MODEL = "fal-ai/flux/dev"
PAYLOAD = {"images": [{"url": "https://example.com/cat.png"}]}


@pytest.fixture
def mock(fal_mock):
    fal_mock.on_queue(MODEL, PAYLOAD)
    return fal_mock


def lifecycle(submit, status_of, result_of, cancel_of):
    """Submit, then status, result and cancel through the given callables."""
    env = submit()
    assert env.status == 200, env.body
    rid = env.json["request_id"]
    status = status_of(rid)
    assert (status.status, status.json["status"], status.json["request_id"]) == (200, "COMPLETED", rid)
    result = result_of(rid)
    assert (result.status, result.json) == (200, PAYLOAD)
    cancel = cancel_of(rid)
    assert (cancel.status, cancel.json) == (400, {"status": "ALREADY_COMPLETED"})
    return rid


def test_target_url_header_as_sent_by_the_js_proxy(mock):
    def via(method, url, body=None):
        return http(method, mock.url, body, headers={"x-fal-target-url": url})

    lifecycle(
        lambda: via("POST", f"https://queue.fal.run/{MODEL}", {"prompt": "cat"}),
        lambda rid: via("GET", f"https://queue.fal.run/fal-ai/flux/requests/{rid}/status?logs=1"),
        lambda rid: via("GET", f"https://queue.fal.run/fal-ai/flux/requests/{rid}"),
        lambda rid: via("PUT", f"https://queue.fal.run/fal-ai/flux/requests/{rid}/cancel"),
    )
    run = via("POST", f"https://fal.run/{MODEL}", {"prompt": "cat"})
    assert (run.status, run.json) == (200, PAYLOAD)
    routes = [r.route for r in mock.requests]
    assert routes == ["queue.submit", "queue.status", "queue.result", "queue.cancel", "run"]
    assert mock.requests[1].query == {"logs": "1"}


def test_target_url_wins_whatever_path_it_arrives_on(mock):
    res = http(
        "POST",
        f"{mock.url}/queue/some/other-model",
        {"prompt": "cat"},
        headers={"x-fal-target-url": f"https://fal.run/{MODEL}", "x-fal-target-host": "queue.fal.run"},
    )
    assert (res.status, res.json) == (200, PAYLOAD)
    assert mock.requests[-1].route == "run"
    assert mock.requests[-1].model == MODEL


def test_target_url_query_is_used(mock):
    res = http(
        "POST",
        mock.url,
        {"prompt": "cat"},
        headers={
            "x-fal-target-url": f"https://queue.fal.run/{MODEL}?fal_webhook=http%3A%2F%2F127.0.0.1%3A9%2Fh"
        },
    )
    assert res.status == 200
    assert mock.requests[-1].query == {"fal_webhook": "http://127.0.0.1:9/h"}


@pytest.mark.parametrize(
    "host", ["queue.fal.run", "QUEUE.FAL.RUN", "queue.fal.run:443", "https://queue.fal.run"]
)
def test_target_host_header(mock, host):
    hdr = {"x-fal-target-host": host}
    lifecycle(
        lambda: http("POST", f"{mock.url}/{MODEL}", {"prompt": "cat"}, headers=hdr),
        lambda rid: http("GET", f"{mock.url}/{MODEL}/requests/{rid}/status", headers=hdr),
        lambda rid: http("GET", f"{mock.url}/{MODEL}/requests/{rid}", headers=hdr),
        lambda rid: http("PUT", f"{mock.url}/{MODEL}/requests/{rid}/cancel", headers=hdr),
    )


def test_target_host_routes_run_and_rest(mock):
    run = http("POST", f"{mock.url}/{MODEL}", {"prompt": "cat"}, headers={"x-fal-target-host": "fal.run"})
    assert (run.status, run.json) == (200, PAYLOAD)
    for host in ("rest.fal.ai", "rest.alpha.fal.ai"):
        init = http(
            "POST",
            f"{mock.url}/storage/upload/initiate?storage_type=fal-cdn-v3",
            {"content_type": "text/plain", "file_name": "a.txt"},
            headers={"x-fal-target-host": host},
        )
        assert init.status == 200
        assert init.json["upload_url"].startswith(mock.url + "/files/")
        assert init.json["file_url"].endswith("/a.txt")


def test_target_host_takes_precedence_over_legacy_paths(mock):
    res = http(
        "POST",
        f"{mock.url}/queue/submit/x",
        {"prompt": "cat"},
        headers={"x-fal-target-host": "queue.fal.run"},
    )
    assert res.status == 404
    assert res.json["model"] == "queue/submit/x"
    mock.reset()


def test_empty_routing_headers_are_ignored(mock):
    res = http(
        "POST",
        f"{mock.url}/run/{MODEL}",
        {"prompt": "cat"},
        headers={"x-fal-target-url": "", "x-fal-target-host": " "},
    )
    assert (res.status, res.json) == (200, PAYLOAD)


def test_legacy_paths(mock):
    lifecycle(
        lambda: http("POST", f"{mock.url}/queue/submit/{MODEL}", {"prompt": "cat"}),
        lambda rid: http("GET", f"{mock.url}/queue/requests/{rid}/status"),
        lambda rid: http("GET", f"{mock.url}/queue/requests/{rid}"),
        lambda rid: http("PUT", f"{mock.url}/queue/requests/{rid}/cancel"),
    )
    run = http("POST", f"{mock.url}/run/{MODEL}", {"prompt": "cat"})
    assert (run.status, run.json) == (200, PAYLOAD)
    assert mock.requests[0].route == "queue.submit"


@pytest.mark.parametrize("prefix", ["fal-ai/flux/dev/", "fal-ai/flux/", "", "some/other-model/"])
def test_job_found_by_id_whatever_prefix(mock, prefix):
    rid = http("POST", f"{mock.url}/queue/{MODEL}", {"prompt": "cat"}).json["request_id"]
    assert http("GET", f"{mock.url}/queue/{prefix}requests/{rid}/status").json["status"] == "COMPLETED"
    assert http("GET", f"{mock.url}/queue/{prefix}requests/{rid}").json == PAYLOAD


@pytest.mark.parametrize(
    "suffix",
    ["/status/", "/status?logs=1", "/status?logs=0", "/status?logs=true", "/status/?logs=false", "/", "?x=1"],
)
def test_trailing_slashes_and_queries_tolerated(mock, suffix):
    rid = http("POST", f"{mock.url}/queue/{MODEL}/", {"prompt": "cat"}).json["request_id"]
    res = http("GET", f"{mock.url}/queue/fal-ai/flux/requests/{rid}{suffix}")
    assert res.status == 200
    if suffix.startswith("/status"):
        assert res.json["status"] == "COMPLETED"
    else:
        assert res.json == PAYLOAD


def test_namespaced_endpoint_urls(fal_mock):
    fal_mock.on_queue("workflows/acme/pipeline/v2", {"ok": True})
    env = http("POST", f"{fal_mock.url}/queue/workflows/acme/pipeline/v2", {}).json
    assert env["response_url"] == f"{fal_mock.url}/queue/workflows/acme/pipeline/requests/{env['request_id']}"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/queue/fal-ai/flux/dev", "POST, OPTIONS"),
        ("DELETE", "/queue/submit/fal-ai/flux/dev", "POST, OPTIONS"),
        ("POST", "/queue/fal-ai/flux/requests/abc/status", "GET, OPTIONS"),
        ("PUT", "/queue/fal-ai/flux/requests/abc", "GET, OPTIONS"),
        ("GET", "/queue/fal-ai/flux/requests/abc/cancel", "PUT, OPTIONS"),
        ("GET", "/run/fal-ai/flux/dev/stream", "POST, OPTIONS"),
        ("DELETE", "/files/abc/x.png", "GET, PUT, OPTIONS"),
    ],
)
def test_wrong_method_is_405_with_allow(fal_mock, method, path, allow):
    res = http(method, fal_mock.url + path)
    assert res.status == 405
    assert res.headers["Allow"] == allow
    assert method in res.json["detail"]
    assert fal_mock.unmatched == []


@pytest.mark.parametrize("header", ["x-fal-target-host", "x-fal-target-url"])
def test_unknown_host_in_routing_header_is_400_naming_it(fal_mock, header):
    value = "evil.example.com" if header == "x-fal-target-host" else "https://evil.example.com/fal-ai/x"
    res = http("POST", f"{fal_mock.url}/fal-ai/x", {}, headers={header: value})
    assert res.status == 400
    assert "'evil.example.com'" in res.json["detail"]


def test_target_url_that_is_not_a_url(fal_mock):
    res = http("POST", fal_mock.url, {}, headers={"x-fal-target-url": "not a url"})
    assert res.status == 400
    assert "not an absolute URL" in res.json["detail"]


@pytest.mark.parametrize("path", ["/fal", "/fal/", "/fal/fal-ai/flux/dev", "/other", "/fal/queue/"])
def test_unroutable_paths_are_404(fal_mock, path):
    res = http("POST", fal_mock.base_url + path, {})
    assert res.status == 404
    assert res.headers["Content-Type"] == "application/json"
    assert "detail" in res.json
    assert fal_mock.requests[-1].route is None or fal_mock.requests[-1].route == "queue.submit"


def test_cors_preflight_on_any_route(fal_mock):
    for path in ("/fal/fal-ai/flux/dev", "/fal/queue/x/requests/1/cancel", "/anything"):
        res = http("OPTIONS", fal_mock.base_url + path)
        assert res.status == 204
        assert res.headers["Access-Control-Allow-Origin"] == "*"
        assert res.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, OPTIONS"
        assert res.headers["Access-Control-Allow-Headers"] == "*"
    assert fal_mock.requests == []


def test_every_response_carries_cors(mock):
    responses = [
        http("POST", f"{mock.url}/queue/{MODEL}", {"prompt": "cat"}),
        http("GET", f"{mock.url}/queue/x/requests/nope/status"),
        http("GET", f"{mock.url}/queue/{MODEL}"),
        http("POST", mock.base_url + "/elsewhere"),
    ]
    for res in responses:
        assert res.headers["Access-Control-Allow-Origin"] == "*"


def test_journal_records_routes_and_redacts_authorization(mock):
    http(
        "POST",
        f"{mock.url}/queue/{MODEL}?fal_webhook=http://127.0.0.1:1/x",
        {"prompt": "cat", "seed": 7},
        headers={"Authorization": "Key secret-123", "X-Fal-Queue-Priority": "low"},
    )
    rec = mock.requests[-1]
    assert (rec.method, rec.path, rec.route, rec.model) == (
        "POST",
        f"/fal/queue/{MODEL}",
        "queue.submit",
        MODEL,
    )
    assert rec.input == {"prompt": "cat", "seed": 7}
    assert rec.query == {"fal_webhook": "http://127.0.0.1:1/x"}
    assert rec.headers["authorization"] == "[REDACTED]"
    assert rec.headers["Authorization"] == "[REDACTED]"
    assert rec.headers["x-fal-queue-priority"] == "low"
    assert rec.status_code == 200
    assert rec.request_id is not None
    assert "secret-123" not in repr(mock.requests)
