"""Generated media: the URLs the typed helpers make up serve real, decodable bytes."""

from __future__ import annotations

import io
import struct
import sys
import wave
from typing import Any, Callable, Iterator

import fal_client
import httpx
import pytest
from httpclient import http
from PIL import Image

from pytest_falmock import FalMock, ServedFile
from pytest_falmock._media import MAX_PIXELS, png, video_sample

Http = Callable[..., Any]
FLUX = "fal-ai/flux/dev"


def boxes(data: bytes, start: int = 0, end: int = -1) -> Iterator[tuple[str, int, int]]:
    """ISO-BMFF boxes of ``data[start:end]`` as (type, offset, size); checks every size."""
    end = len(data) if end < 0 else end
    at = start
    while at < end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        assert 8 <= size <= end - at, f"box {kind!r} at {at} has a bad size {size}"
        yield kind.decode("latin-1"), at, size
        at += size
    assert at == end


# -- images --------------------------------------------------------------------------------
def test_default_images_download_as_decodable_files_of_the_declared_size(fal_mock: FalMock) -> None:
    fal_mock.on_image(
        FLUX,
        {
            "images": [
                {},
                {"content_type": "image/jpeg", "width": 640, "height": 480},
                {"content_type": "image/webp", "width": 1024, "height": 768},
                {"url": "https://cdn.example/kept.png"},
            ]
        },
    )

    result = fal_client.subscribe(FLUX, {"prompt": "a cat"})

    images = result["images"]
    assert images[3]["url"] == "https://cdn.example/kept.png"  # a URL the test gave is kept
    for image in images[:3]:
        assert image["url"].startswith(fal_mock.url + "/files/generated/")
        response = httpx.get(image["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == image["content_type"]
        assert int(response.headers["content-length"]) == len(response.content)
        with Image.open(io.BytesIO(response.content)) as decoded:
            decoded.load()
            assert decoded.size == (image["width"], image["height"])
            assert Image.MIME[decoded.format] == image["content_type"]
    assert [f.source for f in fal_mock.files] == ["generated"] * 3


def test_the_png_needs_no_pillow_and_is_exactly_what_a_decoder_reads() -> None:
    data = png(3, 2, (10, 20, 30))
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.size, decoded.mode) == ("PNG", (3, 2), "RGB")
        assert decoded.getcolors() == [(6, (10, 20, 30))]


def test_generated_urls_follow_the_host_the_client_used(fal_mock: FalMock, call: Http) -> None:
    fal_mock.on_image(FLUX, {"images": [{}]})

    body = call(
        "POST", fal_mock.url + "/run/" + FLUX, {}, headers={"Host": f"localhost:{fal_mock.port}"}
    ).json

    url = body["images"][0]["url"]
    assert url == f"http://localhost:{fal_mock.port}/fal/files/generated/1024x1024/generated_image_0.png"
    assert call("GET", url).status == 200


def test_jpeg_without_pillow_answers_501_and_png_still_works(
    fal_mock: FalMock, call: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    fal_mock.on_image(FLUX, {"images": [{"content_type": "image/jpeg", "width": 7, "height": 3}, {}]})
    images = call("POST", fal_mock.url + "/run/" + FLUX, {}).json["images"]
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError

    jpeg, png_answer = call("GET", images[0]["url"]), call("GET", images[1]["url"])

    assert jpeg.status == 501
    assert jpeg.json["detail"].startswith("fal_mock needs Pillow to generate image/jpeg placeholders")
    assert "pip install 'pytest-falmock[images]'" in jpeg.json["detail"]
    assert (png_answer.status, png_answer.body[:8]) == (200, b"\x89PNG\r\n\x1a\n")


def test_image_payloads_that_cannot_be_generated_are_refused_when_registered(fal_mock: FalMock) -> None:
    with pytest.raises(ValueError, match=r"images\[0\] has no url and fal_mock cannot generate 'image/avif'"):
        fal_mock.on_image(FLUX, {"images": [{"content_type": "image/avif"}]})
    with pytest.raises(ValueError, match=r"images\[1\] has no url to keep, so it is generated: .*positive"):
        fal_mock.on_image(FLUX, {"images": [{}, {"width": 0}]})
    with pytest.raises(ValueError, match=f"at most 16383 pixels a side and {MAX_PIXELS:,} pixels"):
        fal_mock.on_image(FLUX, {"images": [{"width": 8192, "height": 8192}]})
    fal_mock.on_image(FLUX, {"images": [{"url": "https://x/a.avif", "content_type": "image/avif"}]})


def test_unknown_generated_paths_are_404(fal_mock: FalMock, call: Http) -> None:
    base = fal_mock.url + "/files/generated"
    for path in ("/1024x1024/x.mp4", "/0x5/x.png", "/video/x.wav", "/huge/x.png", "/9x9x9/x.png"):
        answer = call("GET", base + path)
        assert (answer.status, answer.json) == (
            404,
            {"detail": f"No generated media at /fal/files/generated{path}"},
        )
    assert call("PUT", base + "/8x8/x.png", raw=b"x").status == 405


# -- video and audio ----------------------------------------------------------------------------
def test_the_default_video_is_a_valid_mp4_whose_size_is_declared(fal_mock: FalMock) -> None:
    fal_mock.on_video("fal-ai/kling", {"video": {}})

    video = fal_client.subscribe("fal-ai/kling", {"prompt": "a boat"})["video"]

    assert video == {
        "url": fal_mock.url + "/files/generated/video/generated_video.mp4",
        "content_type": "video/mp4",
        "file_name": "generated_video.mp4",
        "file_size": len(video_sample()),
    }
    data = httpx.get(video["url"]).content
    assert len(data) == video["file_size"]
    top = list(boxes(data))
    assert top[0][0] == "ftyp"
    assert data[8:12] in (b"isom", b"mp42", b"mp41")
    assert [kind for kind, _, _ in top if kind in ("moov", "mdat")] == ["moov", "mdat"]
    _, moov, size = next(box for box in top if box[0] == "moov")
    assert {kind for kind, _, _ in boxes(data, moov + 8, moov + size)} >= {"mvhd", "trak"}


def test_a_decoder_accepts_the_mp4_sample() -> None:
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(video_sample())) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
    assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 64, 64)
    assert len(frames) == 8


def test_on_audio_fills_fals_audio_envelope_with_a_short_wav(fal_mock: FalMock) -> None:
    fal_mock.on_audio("fal-ai/tts", {"audio": {}, "duration": 1.0}, route="run")

    result = fal_client.run("fal-ai/tts", {"text": "hello"})

    audio = result["audio"]
    assert result["duration"] == 1.0
    assert audio["url"] == fal_mock.url + "/files/generated/audio/generated_audio.wav"
    assert (audio["content_type"], audio["file_name"]) == ("audio/wav", "generated_audio.wav")
    data = httpx.get(audio["url"]).content
    assert audio["file_size"] == len(data)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1,
            2,
            16000,
            16000,
        )


def test_on_audio_keeps_a_given_url_and_takes_the_helper_keywords(fal_mock: FalMock, call: Http) -> None:
    fal_mock.on_audio("fal-ai/tts", {"audio": {"url": "https://cdn.example/a.mp3"}}, times=1)
    with pytest.raises(
        ValueError, match=r"on_audio\(\): audio has no url and fal_mock cannot generate 'audio/ogg'"
    ):
        fal_mock.on_audio("fal-ai/tts", {"audio": {"content_type": "audio/ogg"}})
    with pytest.raises(TypeError, match=r"'audio' must be a dict"):
        fal_mock.on_audio("fal-ai/tts", {"audio": "x"})

    body = call("POST", fal_mock.url + "/run/fal-ai/tts", {}).json

    assert body == {
        "audio": {
            "url": "https://cdn.example/a.mp3",
            "content_type": "audio/mpeg",
            "file_name": "a.mp3",
            "file_size": 0,
        }
    }
    assert call("POST", fal_mock.url + "/run/fal-ai/tts", {}).status == 404  # times=1
    fal_mock.reset()


# -- add_file and files ---------------------------------------------------------------------------
def test_add_file_serves_the_bytes_a_test_ships(fal_mock: FalMock) -> None:
    photo = png(4, 4, (1, 2, 3))
    url = fal_mock.add_file(photo, "image/png", file_name="cat.png")
    unnamed = fal_mock.add_file(b"RIFF....", "audio/wav")
    fal_mock.on_image(FLUX, {"images": [{"url": url, "width": 4, "height": 4}]})

    image = fal_client.subscribe(FLUX, {"prompt": "a cat"})["images"][0]

    assert image["url"] == url
    assert url.startswith(fal_mock.url + "/files/")
    assert url.endswith("/cat.png")
    response = httpx.get(url)
    assert (response.content, response.headers["content-type"]) == (photo, "image/png")
    assert unnamed.endswith("/upload.wav")
    assert fal_mock.files == [
        ServedFile(url, "cat.png", "image/png", photo, "added"),
        ServedFile(unnamed, "upload.wav", "audio/wav", b"RIFF....", "added"),
    ]
    assert fal_mock.uploads == []


def test_add_file_checks_its_arguments(fal_mock: FalMock) -> None:
    with pytest.raises(TypeError, match=r"add_file\(\): data must be bytes, got str"):
        fal_mock.add_file("text", "text/plain")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="content_type must be a media type"):
        fal_mock.add_file(b"x", "")
    with pytest.raises(RuntimeError, match="start the mock first"):
        FalMock().add_file(b"x", "text/plain")


def test_files_end_with_the_test_and_head_answers_the_size(fal_mock: FalMock) -> None:
    url = fal_mock.add_file(b"0123456789", "text/plain", "digits.txt")
    head = httpx.head(url)
    assert (head.status_code, head.headers["content-length"], head.content) == (200, "10", b"")

    fal_mock.reset()

    assert fal_mock.files == []
    assert http("GET", url).status == 404
