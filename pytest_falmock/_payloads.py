"""The typed helpers' envelopes: fal's image, video and audio response shapes with defaults.

A media object without a ``url`` gets one on the mock itself, serving real bytes of what the
object declares (:mod:`._media`); a ``url`` the caller gave is kept as given.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from ._files import MEDIA_TYPES, extension
from ._media import (
    AUDIO_TYPES,
    IMAGE_FORMATS,
    VIDEO_TYPES,
    MediaKind,
    MediaSpec,
    generated_name,
    image_problem,
)
from ._media import sample_size as media_sample_size
from ._stubs import RenderContext, Renderer
from ._urls import generated_url

#: Where a generated URL goes in a body: ``(path of keys, spec segment, file name)``.
_Slot = tuple[tuple[Any, ...], str, str]


class MediaRenderer:
    """A :data:`~._stubs.Renderer` whose answers carry URLs of media the mock generates;
    :attr:`generated` names them, ``(spec segment, file name)`` each: the only generated files
    the mock serves (the stub declares them when it is registered)."""

    __slots__ = ("_render", "generated")

    def __init__(self, render: Renderer, generated: Sequence[tuple[str, str]]) -> None:
        self._render = render
        self.generated = tuple(generated)

    def __call__(self, request_input: Any, context: RenderContext) -> Any:
        return self._render(request_input, context)


def json_ready(payload: Any, where: str) -> Any:
    """``payload`` itself, once it is known to serialise as strict JSON (no NaN, no objects)."""
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: the payload must be JSON-serialisable: {exc}") from None
    return payload


def _file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def _url_type(url: str, default: str) -> str:
    """The media type of ``default``'s kind a URL's file extension names (else ``default``)."""
    known = MEDIA_TYPES.get(extension(_file_name(url)), "")
    return known if known.split("/")[0] == default.split("/")[0] else default


def _with_defaults(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    out.update(given)
    return out


def _unsupported(helper: str, where: str, content_type: Any, supported: tuple[str, ...]) -> ValueError:
    return ValueError(
        f"{helper}(): {where} has no url and fal_mock cannot generate {content_type!r} "
        f"(it generates {', '.join(supported)}); give {where}.url, e.g. a URL from fal_mock.add_file()"
    )


def _with_urls(body: Any, slots: list[_Slot]) -> MediaRenderer:
    """``render`` for ``body``: a fresh copy with each generated URL put in its slot."""
    frozen = copy.deepcopy(body)

    def render(request_input: Any, context: RenderContext) -> Any:
        out = fresh_copy(frozen)
        for path, segment, name in slots:
            target = out
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = generated_url(context.base_url, segment, name)
        return out

    return MediaRenderer(render, [(segment, name) for _, segment, name in slots])


def image_renderer(payload: Mapping[str, Any]) -> MediaRenderer:
    """Return ``render`` for :meth:`FalMock.on_image`; caller values always win."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"on_image() expects a dict like {{'images': [...]}}, got {payload!r}")
    images_in = payload.get("images", [])
    if not isinstance(images_in, list):
        raise TypeError(f"on_image(): 'images' must be a list, got {images_in!r}")
    images = []
    slots: list[_Slot] = []
    for i, image in enumerate(images_in):
        if not isinstance(image, Mapping):
            raise TypeError(f"on_image(): images[{i}] must be a dict, got {image!r}")
        if "url" in image:
            url = image["url"]
            content_type = _url_type(str(url), "image/png")
        else:
            url = ""
            content_type = image.get("content_type", "image/png")
            if content_type not in IMAGE_FORMATS:
                raise _unsupported("on_image", f"images[{i}]", content_type, tuple(IMAGE_FORMATS))
            width, height = image.get("width", 1024), image.get("height", 1024)
            problem = image_problem(width, height)
            if problem is not None:
                raise ValueError(f"on_image(): images[{i}] has no url to keep, so it is generated: {problem}")
            name = generated_name(f"generated_image_{i}", content_type)
            slots.append((("images", i, "url"), MediaSpec("image", width, height).segment, name))
        defaults = {"url": url, "width": 1024, "height": 1024, "content_type": content_type}
        images.append(_with_defaults(defaults, image))
    base = _with_defaults(
        {
            "images": images,
            "timings": {"inference": 0},
            "seed": 0,
            "has_nsfw_concepts": [False] * len(images),
        },
        {k: v for k, v in payload.items() if k != "images"},
    )
    with_urls = _with_urls(base, slots)
    prompt_given = "prompt" in payload

    def render(request_input: Any, context: RenderContext) -> Any:
        body = with_urls(request_input, context)
        if not prompt_given:
            prompt = ""
            if isinstance(request_input, Mapping) and "prompt" in request_input:
                prompt = request_input["prompt"]
            body["prompt"] = prompt
        return body

    return MediaRenderer(render, with_urls.generated)


def file_renderer(helper: str, key: str, kind: MediaKind, payload: Mapping[str, Any]) -> MediaRenderer:
    """Return ``render`` for ``on_video`` / ``on_audio``: ``{key: {url, content_type, file_name,
    file_size}}`` plus the caller's other keys (``on_video`` adds ``seed``)."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"{helper}() expects a dict like {{'{key}': {{'url': ...}}}}, got {payload!r}")
    given = payload.get(key, {})
    if not isinstance(given, Mapping):
        raise TypeError(f"{helper}(): '{key}' must be a dict, got {given!r}")
    supported = VIDEO_TYPES if kind == "video" else AUDIO_TYPES
    slots: list[_Slot] = []
    if "url" in given:
        url = str(given["url"])
        defaults = {
            "url": url,
            "content_type": _url_type(url, supported[0]),
            "file_name": _file_name(url) or generated_name(f"generated_{kind}", supported[0]),
            "file_size": 0,
        }
    else:
        content_type = given.get("content_type", supported[0])
        if content_type not in supported:
            raise _unsupported(helper, key, content_type, supported)
        name = generated_name(f"generated_{kind}", content_type)
        slots.append(((key, "url"), MediaSpec(kind).segment, name))
        defaults = {
            "url": "",
            "content_type": content_type,
            "file_name": name,
            "file_size": media_sample_size(kind),
        }
    top: dict[str, Any] = {key: _with_defaults(defaults, given)}
    if kind == "video":
        top["seed"] = 0
    body = _with_defaults(top, {k: v for k, v in payload.items() if k != key})
    return _with_urls(body, slots)


_ATOMS = (str, int, float, bool, type(None))


def fresh_copy(value: Any) -> Any:
    """``copy.deepcopy`` for JSON-shaped data, several times faster; other types fall back to it."""
    kind = type(value)
    if kind is dict:
        return {key: fresh_copy(item) for key, item in value.items()}
    if kind is list:
        return [fresh_copy(item) for item in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def constant(payload: Any) -> Renderer:
    """A renderer that always answers (a fresh copy of) ``payload``."""
    frozen = copy.deepcopy(payload)

    def render(request_input: Any, context: RenderContext) -> Any:
        return fresh_copy(frozen)

    return render
