"""Recording media: download the files an upstream result points at, so replays need no network.

Every media download of the recorder happens here. A string in a recorded result is a media URL
when it is an ``http(s)`` URL on a fal media host (``fal.media``, ``*.fal.media``) or, when
recording against ``--fal-upstream``, on the upstream's origin. Each is fetched once:

- with no credentials at all (fal's media URLs are public; the key never leaves with a download);
- without following redirects (a 3xx keeps the URL, with a warning);
- at most ``media_max`` bytes (``--fal-record-media-max``; a larger file keeps its URL, with a
  warning) within :data:`DOWNLOAD_SECONDS` in all, and at most :data:`MAX_MEDIA_FILES` files per
  result (an upstream answer naming more keeps the rest as URLs, with a warning);
- never when its bytes carry a secret of the recording (the key, its id or secret, in any
  encoding the recorder redacts): like the fixture file, no written file holds one.

The bytes go to a hidden temporary file in the fixture's media folder while they arrive (hashed
on the way) and the writer moves them to ``<sha256>.<ext>`` with their entry
(:mod:`._recording_file`). The entry gets ``"media": {url: {"file", "content_type"}}``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

from ._files import content_type_for, extension_for
from ._net import open_url
from ._recording_file import PendingMedia, discard, media_folder
from ._secrets import Redactor

#: Seconds one media download may take in all (each socket read is bounded by the record timeout).
DOWNLOAD_SECONDS = 120.0
#: Media files downloaded for one recorded result, at most (further URLs are kept, with a warning).
MAX_MEDIA_FILES = 64
READ_SIZE = 1024 * 1024
FAL_MEDIA_DOMAIN = "fal.media"


class MediaSkipped(Exception):
    """The URL stays as recorded; the message says why (turned into a warning)."""


@dataclass
class Captured:
    """What :meth:`MediaRecorder.capture` found: the entry's ``media`` and the files to move."""

    media: dict[str, dict[str, str]] = field(default_factory=dict)
    pending: list[PendingMedia] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def discard(self) -> None:
        discard(self.pending)
        self.pending.clear()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), f"{(parts.hostname or '').lower()}:{port}"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


class MediaRecorder:
    """Downloads the media of recorded results next to fixture file ``target``."""

    def __init__(self, target: Path, upstream: Optional[str], media_max: int, read_timeout: float) -> None:
        self.folder = media_folder(target)
        self.upstream_origin = _origin(upstream) if upstream else None
        self.media_max = media_max
        self.read_timeout = read_timeout

    def is_media(self, text: str) -> bool:
        if not text.startswith(("http://", "https://")):
            return False
        try:
            parts = urlsplit(text)
            host = (parts.hostname or "").lower()
            origin = _origin(text)
        except ValueError:
            return False
        if parts.scheme == "https" and (host == FAL_MEDIA_DOMAIN or host.endswith("." + FAL_MEDIA_DOMAIN)):
            return True
        return self.upstream_origin is not None and origin == self.upstream_origin

    def capture(self, body: Any, redactor: Optional[Redactor] = None) -> Captured:
        """Download every media URL in ``body`` (once each); failures keep the URL, noted.
        A file in which ``redactor`` finds a secret is not kept (its URL is)."""
        captured = Captured()
        if self.media_max <= 0:
            return captured
        urls = list(dict.fromkeys(s for s in _strings(body) if self.is_media(s)))
        if len(urls) > MAX_MEDIA_FILES:
            captured.notes.append(
                f"fal_mock recorded {len(urls) - MAX_MEDIA_FILES} media URLs of this result as URLs, "
                f"not their bytes: it names {len(urls)} files, and at most {MAX_MEDIA_FILES} are "
                f"downloaded per result (the first ones)"
            )
            urls = urls[:MAX_MEDIA_FILES]
        for url in urls:
            try:
                temporary, digest, content_type = self._download(url, redactor)
            except MediaSkipped as exc:
                captured.notes.append(f"fal_mock recorded {url} as a URL, not its bytes: {exc}")
                continue
            except BaseException:
                captured.discard()
                raise
            name = f"{digest}.{extension_for(content_type)}"
            captured.pending.append((temporary, self.folder / name))
            captured.media[url] = {"file": f"{self.folder.name}/{name}", "content_type": content_type}
        return captured

    def _download(self, url: str, redactor: Optional[Redactor] = None) -> tuple[Path, str, str]:
        """Fetch ``url`` into a temporary file: (its path, the SHA-256 of its bytes, its type)."""
        request = urllib.request.Request(url, headers={"User-Agent": "fal_mock-recorder", "Accept": "*/*"})
        deadline = time.monotonic() + DOWNLOAD_SECONDS
        try:
            with open_url(request, self.read_timeout) as response:  # never follows a redirect
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.media_max:
                    raise MediaSkipped(self._too_large(f"{int(declared):,} bytes"))
                content_type = (
                    response.headers.get_content_type() if response.headers.get("Content-Type") else ""
                )
                stored = self._store(response, deadline, redactor)
                return (*stored, self._content_type(content_type, url))
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                where = exc.headers.get("Location", "?")
                raise MediaSkipped(
                    f"it answered HTTP {exc.code} to {where} (redirects are not followed)"
                ) from None
            raise MediaSkipped(f"it answered HTTP {exc.code}") from None
        except (OSError, HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise MediaSkipped(f"the download failed: {reason}") from None

    def _store(self, response: Any, deadline: float, redactor: Optional[Redactor]) -> tuple[Path, str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=self.folder)
        temporary = Path(name)
        digest = hashlib.sha256()
        size = 0
        tail = ""  # the end of the previous piece: a secret may straddle two
        try:
            with os.fdopen(fd, "wb") as handle:
                while True:
                    if time.monotonic() > deadline:
                        raise MediaSkipped(f"the download took longer than {DOWNLOAD_SECONDS:g} s")
                    piece = response.read(READ_SIZE)
                    if not piece:
                        break
                    size += len(piece)
                    if size > self.media_max:
                        raise MediaSkipped(self._too_large(f"more than {self.media_max:,} bytes"))
                    if redactor is not None:
                        text = tail + piece.decode("latin-1")  # byte for byte
                        if redactor.found_in(text):
                            raise MediaSkipped("its bytes carry your fal key (in some form), never written")
                        tail = text[-redactor.span :] if redactor.span else ""
                    digest.update(piece)
                    handle.write(piece)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary, digest.hexdigest()

    def _too_large(self, size: str) -> str:
        return (
            f"it is {size}, over the {self.media_max:,}-byte cap "
            "(raise it with --fal-record-media-max, or --record-media-max for fal-mock)"
        )

    @staticmethod
    def _content_type(declared: str, url: str) -> str:
        if declared and declared != "application/octet-stream":
            return declared
        return content_type_for(urlsplit(url).path.rsplit("/", 1)[-1])
