"""The typed helpers' envelopes: fal's image and video response shapes with defaults."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

IMAGE_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
VIDEO_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "m4v": "video/x-m4v",
}


def json_ready(payload: Any, where: str) -> Any:
    """``payload`` itself, once it is known to serialise as strict JSON (no NaN, no objects)."""
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: the payload must be JSON-serialisable: {exc}") from None
    return payload


def _extension(url: str) -> str:
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def _with_defaults(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    out.update(given)
    return out


def image_renderer(payload: Mapping[str, Any]) -> Callable[[Any], Any]:
    """Return ``input -> body`` for :meth:`FalMock.on_image`; caller values always win."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"on_image() expects a dict like {{'images': [...]}}, got {payload!r}")
    images_in = payload.get("images", [])
    if not isinstance(images_in, list):
        raise TypeError(f"on_image(): 'images' must be a list, got {images_in!r}")
    images = []
    for i, image in enumerate(images_in):
        if not isinstance(image, Mapping):
            raise TypeError(f"on_image(): images[{i}] must be a dict, got {image!r}")
        url = image.get("url", f"https://mock.fal.media/files/generated_image_{i}.png")
        defaults = {
            "url": url,
            "width": 1024,
            "height": 1024,
            "content_type": IMAGE_TYPES.get(_extension(str(url)), "image/png"),
        }
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
    frozen = copy.deepcopy(base)
    prompt_given = "prompt" in payload

    def render(request_input: Any) -> Any:
        body = fresh_copy(frozen)
        if not prompt_given:
            prompt = ""
            if isinstance(request_input, Mapping) and "prompt" in request_input:
                prompt = request_input["prompt"]
            body["prompt"] = prompt
        return body

    return render


def video_renderer(payload: Mapping[str, Any]) -> Callable[[Any], Any]:
    """Return ``input -> body`` for :meth:`FalMock.on_video`; caller values always win."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"on_video() expects a dict like {{'video': {{'url': ...}}}}, got {payload!r}")
    video_in = payload.get("video", {})
    if not isinstance(video_in, Mapping):
        raise TypeError(f"on_video(): 'video' must be a dict, got {video_in!r}")
    url = str(video_in.get("url", "https://mock.fal.media/files/generated_video.mp4"))
    video = _with_defaults(
        {
            "url": url,
            "content_type": VIDEO_TYPES.get(_extension(url), "video/mp4"),
            "file_name": _file_name(url) or "generated_video.mp4",
            "file_size": 0,
        },
        video_in,
    )
    body = _with_defaults({"video": video, "seed": 0}, {k: v for k, v in payload.items() if k != "video"})
    return constant(body)


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


def constant(payload: Any) -> Callable[[Any], Any]:
    """A renderer that always answers (a fresh copy of) ``payload``."""
    frozen = copy.deepcopy(payload)

    def render(request_input: Any) -> Any:
        return fresh_copy(frozen)

    return render
