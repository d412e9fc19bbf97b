"""JSON fixture files (the seed's format), validated entry by entry.

``{"fixtures": [{"match": {"model": "fal-ai/flux/dev", "endpoint": "fal"},
                 "response": {"json": {...}}}]}``

A response is a JSON body (``"json"``, with optional ``"status"``, ``"error_type"`` and
``"headers"``) or a stream (``"events"``: a list, one ``data:`` event each).

An entry may add ``"media": {"<url in the response>": {"file": "<path>", "content_type": "..."}}``:
``file`` is relative to the fixture file (a recording writes ``<fixture stem>.media/<sha256>.<ext>``)
and, on replay, every string in the response equal to ``<url>`` is answered as a URL on the mock
serving that file.

A realtime entry (``"match": {"route": "realtime", ...}``) answers each message on a realtime
connection (see ``FalMock.on_realtime``) with ``"json"`` (one result for every message),
``"messages"`` (one per message on each connection, in order) or ``"error"`` (+ ``"reason"``,
an ``x-fal-error``).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional

from ._files import RecordedMedia
from ._payloads import constant
from ._realtime import realtime_answer, realtime_error
from ._stubs import OptionError, RenderContext, Renderer, Stub, make_stub, model_id_problem
from ._urls import file_url

MATCH_KEYS = {"model", "model_regex", "endpoint", "input", "route"}
RESPONSE_KEYS = {"json", "events", "status", "error_type", "headers"}
#: ``"route": "realtime"`` entries: exactly one of json / messages / error (+ reason).
REALTIME_RESPONSE_KEYS = {"json", "messages", "error", "reason"}
ENTRY_KEYS = {"match", "response", "times", "latency", "media"}
MEDIA_KEYS = {"file", "content_type"}


class FixtureFileError(ValueError):
    """A fixture file that cannot be loaded; the message names the file and the entry."""


def fixture_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.json`` files of a directory in name order."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file())
    if not path.exists():
        raise FixtureFileError(f"fal fixture file {path} does not exist")
    return [path]


def load_path(path: Path) -> list[Stub]:
    fixtures: list[Stub] = []
    for file in fixture_files(path):
        fixtures.extend(load_file(file))
    return fixtures


def read_document(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureFileError(f"fal fixture file {file}: cannot be read: {exc}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise FixtureFileError(f"fal fixture file {file}: invalid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_file(file: Path) -> list[Stub]:
    return parse_document(read_document(file), str(file), file.parent)


def parse_document(doc: Any, source: str, base: Optional[Path] = None) -> list[Stub]:
    """Validate a whole ``{"fixtures": [...]}`` document; ``source`` names it in errors and
    ``base`` is the folder media files are relative to (None: the document has no file)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("fixtures"), list):
        raise FixtureFileError(
            f'fal fixture file {source}: expected an object with a "fixtures" list, '
            'e.g. {"fixtures": [{"match": {"model": "fal-ai/flux/dev"}, "response": {"json": {}}}]}'
        )
    return [parse_entry(entry, f"{source}: fixtures[{i}]", base) for i, entry in enumerate(doc["fixtures"])]


def _fail(where: str, message: str) -> FixtureFileError:
    return FixtureFileError(f"fal fixture file {where}: {message}")


def _object(value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {json.dumps(value)[:60]}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return value


def parse_entry(entry: Any, where: str, base: Optional[Path] = None) -> Stub:
    entry = _object(entry, where, ENTRY_KEYS)
    match = _object(entry.get("match"), f"{where}.match", MATCH_KEYS)
    realtime = match.get("route") == "realtime"
    allowed = REALTIME_RESPONSE_KEYS if realtime else RESPONSE_KEYS
    response = _object(entry.get("response"), f"{where}.response", allowed)

    endpoint = match.get("endpoint", "fal")
    if endpoint != "fal":
        raise _fail(f"{where}.match.endpoint", f'must be "fal", got {endpoint!r}')
    model: str | re.Pattern[str]
    if ("model" in match) == ("model_regex" in match):
        raise _fail(f"{where}.match", 'needs exactly one of "model" or "model_regex"')
    if "model" in match:
        model = match["model"]
        if not isinstance(model, str) or not model:
            raise _fail(f"{where}.match.model", f"expected a non-empty string, got {model!r}")
        problem = model_id_problem(model)
        if problem is not None:
            raise _fail(f"{where}.match.model", problem)
    else:
        pattern = match["model_regex"]
        if not isinstance(pattern, str):
            raise _fail(f"{where}.match.model_regex", f"expected a string, got {pattern!r}")
        try:
            model = re.compile(pattern)
        except re.error as exc:
            raise _fail(f"{where}.match.model_regex", f"invalid regular expression: {exc}") from None
    route = match.get("route")
    if route not in (None, "queue", "run", "realtime"):
        raise _fail(f"{where}.match.route", f'must be "queue", "run" or "realtime", got {route!r}')
    match_input = match.get("input")
    if match_input is not None and not isinstance(match_input, dict):
        raise _fail(f"{where}.match.input", f"expected an object, got {match_input!r}")
    shown = model if isinstance(model, str) else f"/{model.pattern}/"
    label = f"{where} (model {shown})"
    if realtime:
        return _realtime_entry(entry, response, model, label, match_input, where)

    if ("json" in response) == ("events" in response):
        raise _fail(f"{where}.response", 'needs exactly one of "json" (a body) or "events" (a stream)')
    events = response.get("events")
    if "events" in response:
        if not isinstance(events, list):
            raise _fail(f"{where}.response.events", f"expected a list of JSON values, got {events!r}")
        for key in ("status", "error_type"):
            if key in response:
                raise _fail(f"{where}.response.{key}", 'a stream ("events") always answers 200')
        if route is not None:
            message = 'a stream ("events") serves stream requests only; drop "route"'
            raise _fail(f"{where}.match.route", message)
    status = response.get("status", 200)
    if (
        isinstance(status, bool)
        or not isinstance(status, int)
        or not (200 <= status <= 299 or 400 <= status <= 599)
    ):
        raise _fail(f"{where}.response.status", f"expected an HTTP status 200-299 or 400-599, got {status!r}")
    error_type = response.get("error_type")
    if error_type is not None and not isinstance(error_type, str):
        raise _fail(f"{where}.response.error_type", f"expected a string, got {error_type!r}")
    media = _media(entry.get("media"), f"{where}.media", base)
    body = response["json"] if events is None else (events[-1] if events else None)
    if error_type is not None and status >= 400 and isinstance(body, dict) and "error_type" not in body:
        body = {**body, "error_type": error_type}  # every error body carries its error_type, as fal's do
    try:
        return make_stub(
            model,
            replay(body, media) if media else constant(body),
            label,
            status=status,
            only_kind=route,
            match_input=match_input,
            times=entry.get("times"),
            latency=entry.get("latency", 0),
            error_type=error_type,
            events=events,
            headers=response.get("headers"),
            media=media,
        )
    except OptionError as exc:
        field = "response.headers" if exc.name == "headers" else exc.name
        raise _fail(f"{where}.{field}", f"expected {exc.requirement}, got {exc.value!r}") from None


def _media(spec: Any, where: str, base: Optional[Path]) -> tuple[RecordedMedia, ...]:
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        raise _fail(
            where, f"expected an object of URL -> {{file, content_type}}, got {json.dumps(spec)[:60]}"
        )
    if base is None:
        raise _fail(where, "media files need a fixture file on disk (their paths are relative to it)")
    out = []
    for url, item in spec.items():
        at = f"{where}[{url!r}]"
        item = _object(item, at, MEDIA_KEYS)
        file, content_type = item.get("file"), item.get("content_type")
        if not isinstance(content_type, str) or not content_type:
            raise _fail(
                f"{at}.content_type", f"expected a media type such as 'image/png', got {content_type!r}"
            )
        relative = PurePosixPath(file) if isinstance(file, str) else None
        if (
            relative is None
            or relative.is_absolute()
            or ".." in relative.parts
            or "\\" in str(file)
            or not file
        ):
            raise _fail(f"{at}.file", f"expected a relative path inside the fixture's folder, got {file!r}")
        path = base.joinpath(*relative.parts)
        if not path.is_file():
            raise _fail(
                f"{at}.file",
                f"{file} is missing next to the fixture file "
                "(commit the media folder with it, or record again)",
            )
        out.append(RecordedMedia(url, path.resolve(), content_type))
    return tuple(out)


def replay(body: Any, media: tuple[RecordedMedia, ...]) -> Renderer:
    """A renderer for ``body`` that points each recorded media URL at the mock's copy."""
    frozen = copy.deepcopy(body)
    keys = {item.url: item.key for item in media}

    def rewrite(value: Any, base_url: str) -> Any:
        if isinstance(value, str):
            key = keys.get(value)
            return value if key is None else file_url(base_url, *key)
        if isinstance(value, list):
            return [rewrite(item, base_url) for item in value]
        if isinstance(value, dict):
            return {name: rewrite(item, base_url) for name, item in value.items()}
        return value

    def render(request_input: Any, context: RenderContext) -> Any:
        return rewrite(frozen, context.base_url)  # a new copy, like fresh_copy

    return render


def _realtime_entry(
    entry: Mapping[str, Any],
    response: Mapping[str, Any],
    model: str | re.Pattern[str],
    label: str,
    match_input: Any,
    where: str,
) -> Stub:
    given = [key for key in ("json", "messages", "error") if key in response]
    if len(given) != 1:
        raise _fail(
            f"{where}.response", 'a realtime entry needs exactly one of "json", "messages" or "error"'
        )
    for key in ("latency", "media"):
        if key in entry:
            raise _fail(f"{where}.{key}", "does not apply to realtime entries")
    if "reason" in response and given != ["error"]:
        raise _fail(f"{where}.response.reason", 'goes with "error"')
    try:
        if given == ["error"]:
            answer = realtime_error(response["error"], response.get("reason", ""), "")
        elif given == ["json"]:
            if not isinstance(response["json"], dict):
                raise TypeError(f"json: expected an object, got {json.dumps(response['json'])[:60]}")
            answer = realtime_answer(response["json"], "json")
        else:
            messages = response["messages"]
            if (
                not isinstance(messages, list)
                or not all(isinstance(m, dict) for m in messages)
                or not messages
            ):
                raise TypeError(
                    f"messages: expected a non-empty list of objects, got {json.dumps(messages)[:60]}"
                )
            answer = realtime_answer(messages, "messages")
    except (TypeError, ValueError) as exc:
        raise _fail(f"{where}.response", str(exc).lstrip(": ")) from None
    try:
        return make_stub(
            model, constant(None), label, match_input=match_input, times=entry.get("times"), socket=answer
        )
    except OptionError as exc:
        raise _fail(f"{where}.{exc.name}", f"expected {exc.requirement}, got {exc.value!r}") from None
