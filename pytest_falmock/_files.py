"""The one file store: uploads, files a test added, generated media and recorded media.

Held by :class:`~._stores.Stores` and guarded by its lock. Per-test files (uploads, multipart
uploads under way, ``add_file``, generated media served in this test) are dropped at reset, and
their temporary files deleted; recorded media are registered for the session (they are files
next to a fixture file, read on demand).

Per-test files are bounded (``Settings.max_files``, ``Settings.max_file_bytes``): each file,
each multipart upload under way and each of its parts counts, and what would go past either
bound is refused (:class:`StoreFull`, answered 507) instead of filling memory or disk. Small
files stay in memory until :data:`MAX_IN_MEMORY` bytes of them are held; later ones are
appended to one temporary file, the test's arena (one descriptor for all; the bodies over
4 MiB that arrive in their own temporary files are at most ``max_file_bytes`` / 4 MiB). Arena
bytes are freed only at reset, so they stay counted when their file is replaced. Every file is served at
``/fal/files/<id>/<name>`` (:func:`~._urls.file_url`) except generated media
(``/fal/files/generated/<spec>/<name>``, made on demand by :mod:`._media`).
"""

from __future__ import annotations

import hashlib
import mimetypes
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterable, Literal, Optional
from urllib.parse import unquote

from ._blob import EMPTY as EMPTY_BLOB
from ._blob import Arena, ArenaSlice, Blob, JoinedBlob, PathBlob

FileKey = tuple[str, str]
Source = Literal["upload", "added", "generated", "recorded"]

#: Extensions of the media types fal answers with, fixed here (``mimetypes`` varies by platform).
MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "m4v": "video/x-m4v",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
}
_EXTENSIONS = {"image/jpeg": "jpg", **{v: k for k, v in MEDIA_TYPES.items() if v != "image/jpeg"}}
#: Multipart part numbers run 1..MAX_PARTS (S3's limit, which fal's CDN follows).
MAX_PARTS = 10_000
#: Upload URLs issued and not used yet, kept at most (the oldest is forgotten first).
MAX_ISSUED = 10_000
#: Longest file name (and content type) kept: a client may send anything up to its body limit.
MAX_NAME = 255
#: Bytes of per-test files kept in memory; beyond, small files are written to temporary files.
MAX_IN_MEMORY = 64 * 1024 * 1024
#: The documented defaults of ``Settings.max_files`` / ``Settings.max_file_bytes``.
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024


def extension(name: str) -> str:
    """``cat.PNG`` -> ``png``; ``clip`` -> ``""``."""
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def content_type_for(name: str) -> str:
    """The media type a file name's extension stands for (``application/octet-stream`` if none)."""
    known = MEDIA_TYPES.get(extension(name))
    if known:
        return known
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def extension_for(content_type: str) -> str:
    """``image/jpeg`` -> ``jpg``; an unknown type -> ``bin``."""
    bare = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(bare) or (mimetypes.guess_extension(bare) or ".bin").lstrip(".")


def safe_name(name: str, content_type: str = "") -> str:
    """A file name safe as one URL path segment, at most :data:`MAX_NAME` characters (a longer
    one keeps its extension); unnamed files get ``upload.<ext>``."""
    cleaned = name.replace("/", "_").replace("\\", "_").replace("\x00", "").replace("?", "_")
    cleaned = cleaned.replace("#", "_").strip()
    if len(cleaned) > MAX_NAME:
        ext = extension(cleaned)
        ext = f".{ext}" if 0 < len(ext) <= 16 else ""
        cleaned = cleaned[: MAX_NAME - len(ext)].rstrip() + ext
    if cleaned not in ("", ".", ".."):
        return cleaned
    return "upload." + extension_for(content_type)


def media_type(value: str, default: str = "application/octet-stream") -> str:
    """``value`` as a file's content type: stripped, and ``default`` when it is empty or longer
    than :data:`MAX_NAME` characters (no media type is; it would be served back as a header)."""
    value = value.strip()
    return value if 0 < len(value) <= MAX_NAME else default


def new_file_id() -> str:
    return secrets.token_hex(16)


@dataclass
class FileEntry:
    """One file the mock serves. ``url`` is None for recorded media (served on every host)."""

    key: FileKey
    blob: Blob
    content_type: str
    source: Source
    url: Optional[str] = None
    #: How an upload arrived: ``cdn``, ``storage`` or ``multipart``.
    via: str = ""

    @property
    def file_name(self) -> str:
        return self.key[1]


@dataclass(frozen=True)
class RecordedMedia:
    """A media file next to a fixture file that the response URL ``url`` is served from."""

    url: str
    path: Path
    content_type: str

    @property
    def key(self) -> FileKey:
        """Served as ``<id>/<the URL's file name>``; the id is unique to the file on disk."""
        name = self.url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        file_id = hashlib.sha256(str(self.path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return (file_id, safe_name(unquote(name), self.content_type))


@dataclass
class MultipartUpload:
    """A multipart upload under way: parts arrive in any order, each answered with an ETag."""

    upload_id: str
    key: FileKey
    url: str
    content_type: str
    parts: dict[int, tuple[str, Blob]] = field(default_factory=dict)

    def close(self) -> None:
        for _, blob in self.parts.values():
            blob.close()
        self.parts.clear()


class MultipartError(Exception):
    """A ``complete`` the parts do not add up to; answered 400 with this detail."""


class StoreFull(Exception):
    """This test's files are at ``max_files`` or ``max_file_bytes``; answered 507 with this detail."""


class FileStore:
    """The files the mock serves; every method takes ``lock`` (the stores' lock)."""

    def __init__(
        self,
        lock: ContextManager[Any],
        max_files: int = DEFAULT_MAX_FILES,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.lock = lock
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._test: OrderedDict[FileKey, FileEntry] = OrderedDict()
        self._session: OrderedDict[FileKey, FileEntry] = OrderedDict()
        self._multipart: dict[str, MultipartUpload] = {}
        #: Upload URLs handed out (``storage/upload/initiate``) and not used yet -> content type.
        self._issued: OrderedDict[FileKey, str] = OrderedDict()
        #: What the per-test files hold: files (uploads under way and parts count), bytes, and
        #: the bytes of those in memory.
        self._count = 0
        self._bytes = 0
        self._memory = 0
        #: Where small files go once MAX_IN_MEMORY bytes of them are in memory.
        self._arena = Arena()

    # -- the bound ------------------------------------------------------------------------
    def _charge(self, blobs: Iterable[Blob], what: str, freed: Iterable[Blob] = ()) -> None:
        """Count ``blobs`` (held from now on) in place of ``freed`` (the lock held); raises
        :class:`StoreFull` when that would pass a bound."""
        added, gone = list(blobs), list(freed)
        count = self._count + len(added) - len(gone)
        size = self._bytes + sum(b.size for b in added) - sum(_freed_bytes(b) for b in gone)
        if count > self.max_files or size > self.max_bytes:
            raise StoreFull(
                f"fal_mock holds {self._count:,} files of {self._bytes:,} bytes for this test: {what} "
                f"would pass its bound of {self.max_files:,} files or {self.max_bytes:,} bytes "
                "(Settings.max_files, Settings.max_file_bytes; uploads, multipart uploads and their "
                "parts under way, added and generated files count, until the next reset)"
            )
        self._count, self._bytes = count, size
        self._memory += sum(b.memory for b in added) - sum(b.memory for b in gone)

    def spill(self, blob: Blob) -> Blob:
        """``blob``, or a copy in the test's arena once :data:`MAX_IN_MEMORY` bytes of per-test
        files are in memory (call without the lock: it may write to disk)."""
        if blob.memory and self._memory + blob.memory > MAX_IN_MEMORY:
            return self._arena.add(blob)
        return blob

    # -- files --------------------------------------------------------------------------
    def put(self, entry: FileEntry) -> None:
        """Serve ``entry`` until the next reset (a file at the same key is replaced); raises
        :class:`StoreFull` (``entry`` is not kept) past the bound."""
        with self.lock:
            old = self._test.get(entry.key)
            freed = [old.blob] if old is not None else []
            self._charge([entry.blob], f"a {entry.blob.size:,}-byte {entry.source} file", freed)
            self._test.pop(entry.key, None)
            self._test[entry.key] = entry
        if old is not None and old.blob is not entry.blob:
            old.blob.close()

    def issue(self, key: FileKey, content_type: str) -> None:
        """Remember an upload URL handed out: it takes one ``PUT`` (see :meth:`take_issued`)."""
        with self.lock:
            self._issued[key] = content_type
            if len(self._issued) > MAX_ISSUED:
                self._issued.popitem(last=False)

    def take_issued(self, key: FileKey) -> Optional[str]:
        """Use up an issued upload URL: its declared content type, or None (never issued, used)."""
        with self.lock:
            return self._issued.pop(key, None)

    def get(self, key: FileKey) -> Optional[FileEntry]:
        with self.lock:
            return self._test.get(key) or self._session.get(key)

    def entries(self) -> list[FileEntry]:
        """Recorded media first, then this test's files in the order they arrived."""
        with self.lock:
            return [*self._session.values(), *self._test.values()]

    def add_recorded(self, media: Iterable[RecordedMedia]) -> None:
        """Serve recorded media for the session (read from disk on each download)."""
        with self.lock:
            for item in media:
                if item.key not in self._session:
                    blob = PathBlob(item.path)
                    self._session[item.key] = FileEntry(item.key, blob, item.content_type, "recorded")

    def clear_recorded(self) -> None:
        """Stop serving recorded media (their session stubs are gone)."""
        with self.lock:
            self._session.clear()

    # -- multipart ------------------------------------------------------------------------
    def begin_multipart(self, key: FileKey, url: str, content_type: str) -> str:
        """A new multipart upload's id (it counts as one file until it completes);
        :class:`StoreFull` past the bound."""
        upload_id = new_file_id()
        with self.lock:
            self._charge([EMPTY_BLOB], "a new multipart upload")
            self._multipart[upload_id] = MultipartUpload(upload_id, key, url, content_type)
        return upload_id

    def add_part(self, upload_id: str, key: FileKey, number: int, blob: Blob) -> Optional[str]:
        """Keep part ``number``; its ETag, or None when no such upload is under way.
        :class:`StoreFull` past the bound (the part is dropped)."""
        etag = f'"{new_file_id()}"'
        blob = self.spill(blob)
        old = None
        try:
            with self.lock:
                upload = self._multipart.get(upload_id)
                if upload is None or upload.key != key:
                    etag = ""
                else:
                    old = upload.parts.get(number)
                    freed = [old[1]] if old is not None else []
                    self._charge([blob], f"part {number} ({blob.size:,} bytes)", freed)
                    upload.parts[number] = (etag, blob)
        except StoreFull:
            blob.close()
            raise
        if old is not None:  # the client sent this part again: keep the newest
            old[1].close()
        if not etag:
            blob.close()
            return None
        return etag

    def complete_multipart(self, upload_id: str, key: FileKey, listed: Any) -> Optional[FileEntry]:
        """Assemble the parts ``listed`` (``[{"partNumber", "etag"}, ...]``) into an upload.

        None when no such upload is under way; :class:`MultipartError` when the list is
        malformed, names a part that never arrived or an ETag that does not match.
        """
        with self.lock:
            upload = self._multipart.get(upload_id)
            if upload is None or upload.key != key:
                return None
            order = _check_parts(listed, upload)
            del self._multipart[upload_id]
            chosen = [upload.parts.pop(number)[1] for number in order]
            unlisted = [blob for _, blob in upload.parts.values()]  # dropped, as S3 does
            # the upload and its listed parts become one file (their bytes stay where they are)
            self._count -= len(chosen) + len(unlisted)
            self._bytes -= sum(_freed_bytes(blob) for blob in unlisted)
            self._memory -= sum(blob.memory for blob in unlisted)
            entry = FileEntry(key, JoinedBlob(chosen), upload.content_type, "upload", upload.url, "multipart")
            self._test.pop(key, None)
            self._test[key] = entry
        upload.close()
        return entry

    # -- reset --------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop this test's files and multipart uploads (deleting their temporary files)."""
        with self.lock:
            entries = list(self._test.values())
            uploads = list(self._multipart.values())
            self._test.clear()
            self._multipart.clear()
            self._issued.clear()
            self._count = self._bytes = self._memory = 0
            arena, self._arena = self._arena, Arena()
        arena.close()
        for entry in entries:
            entry.blob.close()
        for upload in uploads:
            upload.close()


def _freed_bytes(blob: Blob) -> int:
    """The bytes closing ``blob`` gives back: none for arena slices (freed at reset only)."""
    if isinstance(blob, ArenaSlice):
        return 0
    if isinstance(blob, JoinedBlob):
        return sum(_freed_bytes(part) for part in blob.parts)
    return blob.size


def _check_parts(listed: Any, upload: MultipartUpload) -> list[int]:
    """The part numbers ``listed`` names, in order, once each is known to match what arrived."""
    if not isinstance(listed, list) or not listed:
        raise MultipartError('the body must be {"parts": [{"partNumber": 1, "etag": "..."}, ...]}')
    numbers: list[int] = []
    for i, part in enumerate(listed):
        number = part.get("partNumber") if isinstance(part, dict) else None
        etag = part.get("etag") if isinstance(part, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise MultipartError(
                f'parts[{i}] must be {{"partNumber": <int>, "etag": <str>}}, got {part!r:.120}'
            )
        arrived = upload.parts.get(number)
        if arrived is None:
            have = ", ".join(str(n) for n in sorted(upload.parts)) or "none"
            raise MultipartError(f"part {number} was never uploaded (parts received: {have})")
        if arrived[0] != etag:
            raise MultipartError(
                f"part {number}: etag {etag!r} does not match the uploaded part's {arrived[0]!r}"
            )
        numbers.append(number)
    order = sorted(numbers)
    if len(set(order)) != len(order):
        raise MultipartError("a part number is listed twice")
    if order != list(range(1, len(order) + 1)):
        missing = sorted(set(range(1, order[-1] + 1)) - set(order))
        raise MultipartError(
            f"part {missing[0]} is missing: parts must be numbered 1..{len(order)} without gaps"
        )
    return order
