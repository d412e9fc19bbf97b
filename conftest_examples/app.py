"""The "application" under test: ordinary code that calls fal.ai through the real fal_client.

Nothing here knows about the mock - the fal_mock fixture redirects fal_client for each test.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import fal_client


def generate_image(prompt: str, on_progress: Optional[Callable[[str], None]] = None) -> str:
    """Queue a flux job, report progress, return the first image URL."""

    def report(update: Any) -> None:
        if on_progress is not None:
            on_progress(type(update).__name__)

    result = fal_client.subscribe(
        "fal-ai/flux/dev",
        arguments={"prompt": prompt, "image_size": "landscape_4_3"},
        with_logs=True,
        on_queue_update=report,
    )
    return str(result["images"][0]["url"])


def generate_video(prompt: str) -> dict[str, Any]:
    """Submit a kling job and wait for it."""
    handle = fal_client.submit("fal-ai/kling-video/v1/standard/text-to-video", arguments={"prompt": prompt})
    return dict(handle.get()["video"])


def transcribe(audio_url: str) -> str:
    """Synchronous run: whisper answers directly, no queue."""
    return str(fal_client.run("fal-ai/whisper", arguments={"audio_url": audio_url})["text"])


def quick_sketch(prompt: str) -> str:
    return str(fal_client.run("fal-ai/flux/schnell", arguments={"prompt": prompt})["images"][0]["url"])
