"""Using the real fal_client in a test: nothing to configure, fal_mock redirects it.

Any test that uses the ``fal_mock`` fixture (or a ``fal_mock``/``fal_queue`` marker) gets
fal_client pointed at the local mock, with a dummy FAL_KEY, and restored afterwards.
"""

from __future__ import annotations

import fal_client
import pytest


@pytest.mark.fal_queue(polls_before_in_progress=2, polls_before_completed=3)
def test_subscribe_to_an_image_model(fal_mock):
    fal_mock.on_image("fal-ai/flux/dev", {"images": [{"url": "https://example.com/cat.png"}]})
    updates = []

    result = fal_client.subscribe(
        "fal-ai/flux/dev",
        arguments={"prompt": "a cat in a hat"},
        with_logs=True,
        on_queue_update=updates.append,
    )

    assert result["images"] == [
        {"url": "https://example.com/cat.png", "width": 1024, "height": 1024, "content_type": "image/png"}
    ]
    assert result["prompt"] == "a cat in a hat"
    assert [type(u).__name__ for u in updates] == ["Queued", "InProgress", "Completed"]
    submit = fal_mock.requests[0]
    assert (submit.route, submit.model, submit.input) == (
        "queue.submit",
        "fal-ai/flux/dev",
        {"prompt": "a cat in a hat"},
    )
    fal_mock.assert_called("fal-ai/flux/dev", times=1)


def test_a_model_error_reaches_your_code(fal_mock):
    fal_mock.on_error("fal-ai/flux/dev", status=422, detail=[{"loc": ["body", "prompt"], "msg": "too long"}])

    with pytest.raises(fal_client.FalClientHTTPError) as excinfo:
        fal_client.subscribe("fal-ai/flux/dev", arguments={"prompt": "x" * 10_000})

    assert excinfo.value.status_code == 422
    assert excinfo.value.message == [{"loc": ["body", "prompt"], "msg": "too long"}]


def test_uploads_are_kept_by_the_mock(fal_mock):
    url = fal_client.upload(b"fake png bytes", "image/png", file_name="input.png")

    (upload,) = fal_mock.uploads
    assert (upload.url, upload.file_name, upload.data) == (url, "input.png", b"fake png bytes")
