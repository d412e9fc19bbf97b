"""Synchronous transcription (the seed's third quick-start example): runs skip the queue."""

from __future__ import annotations

import app


def test_synchronous_transcription(fal_mock):
    fal_mock.on_run("fal-ai/whisper", {"text": "Hello world"})

    assert app.transcribe("https://example.com/hello.mp3") == "Hello world"

    (call,) = fal_mock.requests
    assert call.route == "run"
    assert call.input == {"audio_url": "https://example.com/hello.mp3"}
    assert call.headers["authorization"] == "[REDACTED]"  # the dummy key never shows
