"""Image generation via the queue (the seed's first quick-start example)."""

from __future__ import annotations

import app
import pytest


@pytest.mark.fal_queue(polls=2)  # IN_QUEUE -> IN_PROGRESS -> COMPLETED, like real fal
def test_image_generation_via_queue(flux):
    progress: list[str] = []

    url = app.generate_image("a cat in a hat", on_progress=progress.append)

    assert url == "https://example.com/cat.png"
    assert progress == ["InProgress", "Completed"]
    submit = flux.requests[0]
    assert submit.route == "queue.submit"
    assert submit.input == {"prompt": "a cat in a hat", "image_size": "landscape_4_3"}
    flux.assert_called("fal-ai/flux/dev", times=1)


def test_file_fixture_serves_schnell(fal_mock):
    # fal-ai/flux/schnell comes from fixtures/fal.json (see pytest.ini), no code needed.
    assert app.quick_sketch("a red fox") == "https://example.com/result.png"
