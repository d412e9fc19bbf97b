"""Video generation via the queue (the seed's second quick-start example)."""

from __future__ import annotations

import re

import app
import fal_client
import pytest


def test_video_generation_via_queue(fal_mock):
    fal_mock.on_video(re.compile(r"kling"), {"video": {"url": "https://example.com/clip.mp4"}})

    video = app.generate_video("a paper boat on a river")

    assert video == {
        "url": "https://example.com/clip.mp4",
        "content_type": "video/mp4",
        "file_name": "clip.mp4",
        "file_size": 0,
    }


def test_video_failure_surfaces_as_a_client_error(fal_mock):
    fal_mock.on_error(
        re.compile(r"kling"), status=422, detail=[{"loc": ["body", "prompt"], "msg": "too long"}]
    )

    with pytest.raises(fal_client.client.FalClientHTTPError) as info:
        app.generate_video("x" * 10_000)

    assert info.value.status_code == 422
