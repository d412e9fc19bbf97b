"""Placeholder media with real bytes: the files behind the URLs the typed helpers make up.

- images: a flat colour (picked from the file name) of exactly the declared size. PNG is
  written with :mod:`zlib` alone (every row is the same deflate block, so a 1024x1024 PNG costs
  about a millisecond and no Pillow); JPEG, WebP and GIF are encoded by Pillow when it is
  installed (``pip install 'pytest-falmock[images]'``), else the download answers 501 saying so;
- video: ``media/sample.mp4``, shipped in the package: one second of 64x64 H.264 (baseline,
  8 frames at 8 fps, ``moov`` before ``mdat``), made once with PyAV/libx264;
- audio: one second of a 500 Hz tone, 16 kHz mono 16-bit PCM WAV, written with :mod:`wave`.

A generated file is named by its URL (``/fal/files/generated/<spec>/<name>``, see
:class:`MediaSpec`), made on its first download and cached (:func:`generate`).
"""

from __future__ import annotations

import io
import math
import struct
import threading
import wave
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal, Optional

from ._files import content_type_for, extension_for

MediaKind = Literal["image", "video", "audio"]
#: Image types the mock can generate, with the Pillow format (None: written without Pillow).
IMAGE_FORMATS: dict[str, Optional[str]] = {
    "image/png": None,
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
VIDEO_TYPES = ("video/mp4",)
AUDIO_TYPES = ("audio/wav",)
#: Largest side (WebP's limit) and pixel count of a generated image.
MAX_SIDE = 16383
MAX_PIXELS = 4096 * 4096
#: Generated files kept (they are small: a flat image compresses to a few KiB).
CACHE_SIZE = 64
PILLOW_HINT = "pip install 'pytest-falmock[images]'"
#: One file is made at a time: a 4096x4096 image needs 48 MiB of pixels while it is encoded.
_making = threading.Lock()


class MediaUnavailable(Exception):
    """This file cannot be generated here (e.g. Pillow is missing); answered with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class MediaSpec:
    """What a generated file is: its kind and, for an image, its size.

    It is the URL segment before the file name: ``1024x768`` (an image), ``video`` or ``audio``;
    the file name's extension gives the format.
    """

    kind: MediaKind
    width: int = 0
    height: int = 0

    @property
    def segment(self) -> str:
        return f"{self.width}x{self.height}" if self.kind == "image" else self.kind

    @classmethod
    def parse(cls, segment: str) -> Optional[MediaSpec]:
        if segment in ("video", "audio"):
            return cls(segment)  # type: ignore[arg-type]
        width, sep, height = segment.partition("x")
        digits = len(str(MAX_SIDE))  # int() of a longer string is pointless (and may raise)
        if not sep or not all(v.isdigit() and v.isascii() and len(v) <= digits for v in (width, height)):
            return None
        spec = cls("image", int(width), int(height))
        return spec if image_problem(spec.width, spec.height) is None else None

    def content_types(self) -> tuple[str, ...]:
        if self.kind == "image":
            return tuple(IMAGE_FORMATS)
        return VIDEO_TYPES if self.kind == "video" else AUDIO_TYPES


def image_problem(width: object, height: object) -> Optional[str]:
    """Why an image of ``width`` x ``height`` cannot be generated, or None."""
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"width and height must be positive integers, got {width!r} x {height!r}"
    assert isinstance(width, int)
    assert isinstance(height, int)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        return (
            f"{width}x{height} is larger than the mock generates (at most {MAX_SIDE} pixels a side "
            f"and {MAX_PIXELS:,} pixels)"
        )
    return None


def generated_name(stem: str, content_type: str) -> str:
    """``generated_image_0`` + ``image/jpeg`` -> ``generated_image_0.jpg``."""
    return f"{stem}.{extension_for(content_type)}"


def generate(spec: MediaSpec, name: str) -> tuple[bytes, str]:
    """The bytes and content type of the generated file ``name`` (cached); raises
    :class:`MediaUnavailable` when this file cannot be made here, ``KeyError`` when ``name``'s
    extension is not a type of ``spec``'s kind."""
    content_type = content_type_for(name)
    if content_type not in spec.content_types():
        raise KeyError(name)
    with _making:
        return _generate(spec, name, content_type), content_type


@lru_cache(maxsize=CACHE_SIZE)
def _generate(spec: MediaSpec, name: str, content_type: str) -> bytes:
    if spec.kind == "video":
        return video_sample()
    if spec.kind == "audio":
        return wav_sample()
    return image(spec.width, spec.height, content_type, _colour(name))


def _colour(name: str) -> tuple[int, int, int]:
    digest = zlib.crc32(name.encode("utf-8", "replace"))
    return (64 + digest % 160, 64 + (digest >> 8) % 160, 64 + (digest >> 16) % 160)


def image(width: int, height: int, content_type: str, colour: tuple[int, int, int]) -> bytes:
    """A flat ``colour`` image of exactly ``width`` x ``height`` in ``content_type``."""
    pillow_format = IMAGE_FORMATS[content_type]
    if pillow_format is None:
        return png(width, height, colour)
    try:
        from PIL import Image
    except ImportError:
        raise MediaUnavailable(
            501,
            f"fal_mock needs Pillow to generate {content_type} placeholders ({PILLOW_HINT}); "
            "image/png works without it, or give the image a url (e.g. from fal_mock.add_file())",
        ) from None
    out = io.BytesIO()
    options = {"lossless": True, "method": 0, "quality": 0} if pillow_format == "WEBP" else {}
    Image.new("RGB", (width, height), colour).save(out, pillow_format, **options)
    return out.getvalue()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """An 8-bit RGB PNG of one colour, with zlib only.

    Every scanline is the same, so one deflate block that compresses a scanline after a full
    flush (no back-references across it) is repeated for each row, then the stream is ended
    and the zlib checksum of the whole image appended.
    """
    row = b"\x00" + bytes(colour) * width  # filter type 0, then the pixels
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(row) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(row, adler)
    stream = b"\x78\xda" + block * height + end + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def video_sample() -> bytes:
    """The packaged MP4 sample (one second of 64x64 H.264)."""
    return resources.files("pytest_falmock").joinpath("media/sample.mp4").read_bytes()


@lru_cache(maxsize=1)
def wav_sample(rate: int = 16000, seconds: int = 1, tone: int = 500) -> bytes:
    """``seconds`` of a ``tone`` Hz sine at ``rate`` Hz, 16-bit mono PCM WAV."""
    period = rate // tone
    cycle = b"".join(
        struct.pack("<h", round(3000 * math.sin(2 * math.pi * i / period))) for i in range(period)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(cycle * (rate * seconds // period))
    return out.getvalue()


def sample_size(kind: MediaKind) -> Optional[int]:
    """The byte size of the video or audio sample (known without generating an image)."""
    if kind == "video":
        return len(video_sample())
    if kind == "audio":
        return len(wav_sample())
    return None
