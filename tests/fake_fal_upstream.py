"""A fake fal.ai for the record tests: one werkzeug server on 127.0.0.1, keyed by x-fal-target-host.

``queue.fal.run``: submit / status / result (status and result live under ``/jobs/...``, so
a recorder that builds its own URLs instead of following the returned ones fails);
``fal.run``: synchronous runs. What a model does is chosen by its id:

- ``fake/error``: 422 validation error (queue: as the result; run: directly)
- ``fake/submit-error``: queue submit answers 422
- ``fake/server-error``: 500; ``fake/html``: 200 text/html; ``fake/slow``: sleeps 1 s
- ``fake/unauthorized``: 401
- ``fake/echo``: the result echoes the Authorization header and query it received
- ``fake/media``: ``{"images": [{"url": <this server>/media/<name>, ...}, ...], "seed": n}``, one
  image per entry of ``media`` (name -> (bytes, content type)), served at ``GET /media/<name>``
  (``redirects`` maps names to a 302 ``Location``)
- anything else: an image result ``{"images": [...], "seed": n, "prompt": ...}`` (its URL is
  on no media host, so a recording keeps it as it is)
- hostile ones: ``fake/redirect`` (302 to ``/steal`` on another origin, ``localhost`` instead
  of 127.0.0.1), ``fake/foreign-status`` (queue: status and result URLs on that other origin),
  ``fake/huge`` (a 64 KiB JSON answer), ``fake/trickle`` (one byte every 50 ms for 5 s),
  ``fake/leak`` (422 whose ``x-fal-error-type`` and body carry the Authorization it received,
  its key, id and secret in every encoding of :func:`encodings`)
- anything else: an image result ``{"images": [...], "seed": n, "prompt": ...}``
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional
from urllib.parse import quote, quote_plus

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Seen:
    method: str
    host: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Job:
    model: str
    input: Any
    auth: str
    query: str
    polls: int = 0


def _json(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


def encodings(secret: str) -> list[str]:
    """``secret`` as an upstream might echo it: cased, percent-encoded, inside base64."""
    forms = [secret, secret.upper(), secret.lower(), secret.swapcase()]
    forms += [quote(secret, safe=""), quote(secret, safe="").lower(), quote(quote(secret, safe=""), safe="")]
    forms += [quote_plus(f"key {secret}"), "".join(f"%{b:02X}" for b in secret.encode())]
    for prefix in ("", "a", "ab"):  # the three alignments of a substring in base64
        for variant in (secret, secret.upper()):
            data = f"{prefix}Key {variant}!".encode()
            forms += [base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()]
    return forms


@dataclass
class FakeFal:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    jobs: dict[str, _Job] = field(default_factory=dict)
    seeds: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    _server: Optional[BaseWSGIServer] = None
    _thread: Optional[threading.Thread] = None

    def start(self) -> FakeFal:
        self._server = make_server(
            "127.0.0.1", 0, Request.application(self._app), threaded=True, request_handler=_Quiet
        )
        self.url = f"http://127.0.0.1:{self._server.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def other_origin(self) -> str:
        """The same server under another origin (``localhost`` instead of 127.0.0.1)."""
        return self.url.replace("127.0.0.1", "localhost")

    def seen(self, host: Optional[str] = None) -> list[Seen]:
        return [r for r in self.requests if host is None or r.host == host]

    # -- behaviour ------------------------------------------------------------------------
    def _result(self, model: str, request_input: Any, auth: str, query: str) -> Response:
        if model == "fake/error":
            detail = [{"loc": ["body", "prompt"], "msg": "prompt is too long", "type": "value_error"}]
            return _json({"detail": detail}, 422, **{"x-fal-error-type": "validation_error"})
        if model == "fake/server-error":
            return _json({"detail": "runner exploded"}, 500)
        if model == "fake/unauthorized":
            return _json({"detail": "No user found for Key ID and Secret"}, 401)
        if model == "fake/html":
            return Response("<html>oops</html>", content_type="text/html")
        if model == "fake/slow":
            time.sleep(1.0)
        if model == "fake/echo":
            return _json({"authorization": auth, "query": query, "note": f"called with {auth}"})
        if model == "fake/media":
            names = [*self.media, *self.redirects]
            images = [{"url": f"{self.url}/media/{name}", "width": 8, "height": 8} for name in names]
            return _json(
                {"images": images, "seed": next(self.seeds), "again": images[0]["url"] if images else None}
            )
        if model == "fake/leak":
            token = auth.split(" ", 1)[-1]
            secrets = [token, *token.split(":", 1)]
            body = {
                "detail": [{"msg": form, form: [form]} for secret in secrets for form in encodings(secret)],
                "authorization": auth,
            }
            return _json(body, 422, **{"x-fal-error-type": f"leaked {auth} / {quote(auth)}"})
        if model == "fake/huge":
            return _json({"blob": "x" * 65536})
        if model == "fake/deep":  # valid JSON nested past Python's recursion limit
            return Response("[" * 100_000 + "]" * 100_000, content_type="application/json")
        if model == "fake/trickle":

            def drip() -> Iterator[bytes]:
                for _ in range(100):
                    time.sleep(0.05)
                    yield b" "
                yield b"{}"

            return Response(drip(), content_type="application/json")
        if model == "fake/redirect":
            return Response("", status=302, headers={"Location": f"{self.other_origin}/steal"})
        prompt = request_input.get("prompt", "") if isinstance(request_input, dict) else ""
        seed = next(self.seeds)
        image = {"url": f"https://images.example/fake/{seed}.png", "width": 512, "height": 512}
        return _json({"images": [image], "seed": seed, "prompt": prompt})

    def _app(self, request: Request) -> Response:
        host = request.headers.get("x-fal-target-host", "")
        body = request.get_data()
        self.requests.append(
            Seen(
                request.method, host, request.path, request.query_string.decode(), dict(request.headers), body
            )
        )
        auth = request.headers.get("Authorization", "")
        query = request.query_string.decode()
        if request.path.startswith("/media/"):
            name = request.path[len("/media/") :]
            if name in self.redirects:
                return Response(status=302, headers={"Location": self.redirects[name]})
            if name not in self.media:
                return _json({"detail": "no such media"}, 404)
            data, content_type = self.media[name]
            return Response(data, content_type=content_type)
        if host == "fal.run":
            model = request.path.strip("/")
            return self._result(model, json.loads(body) if body else None, auth, query)
        if host != "queue.fal.run":
            return _json({"detail": f"fake fal: unknown x-fal-target-host {host!r}"}, 400)
        parts = request.path.strip("/").split("/")
        if parts[0] == "jobs":  # GET /jobs/<id>/status, GET /jobs/<id>
            job = self.jobs.get(parts[1])
            if job is None:
                return _json({"detail": "Request not found"}, 404)
            if parts[2:] == ["status"]:
                job.polls += 1
                state = ["IN_QUEUE", "IN_PROGRESS"][job.polls - 1] if job.polls <= 2 else "COMPLETED"
                return _json({"status": state, "request_id": parts[1]}, 200 if state == "COMPLETED" else 202)
            return self._result(job.model, job.input, job.auth, job.query)
        model = "/".join(parts)
        if model == "fake/redirect":
            return Response("", status=302, headers={"Location": f"{self.other_origin}/steal"})
        if model == "fake/submit-error":
            return _json({"detail": [{"loc": ["body"], "msg": "field required", "type": "missing"}]}, 422)
        if model == "fake/server-error":
            return _json({"detail": "queue is down"}, 503)
        request_id = str(uuid.uuid4())
        self.jobs[request_id] = _Job(model, json.loads(body) if body else None, auth, query)
        job_url = f"{self.other_origin if model == 'fake/foreign-status' else self.url}/jobs/{request_id}"
        return _json(
            {
                "request_id": request_id,
                "status_url": job_url + "/status",
                "response_url": job_url,
                "cancel_url": job_url + "/cancel",
                "status": "IN_QUEUE",
                "queue_position": 0,
            }
        )
