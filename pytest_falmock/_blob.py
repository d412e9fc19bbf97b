"""Immutable bytes that need not sit in memory: request bodies, uploads and served files.

A :class:`Blob` is read in pieces (:meth:`Blob.chunks`) or whole (:meth:`Blob.read`). Small
bodies stay :class:`BytesBlob` (the fast path: no copy, no file); a body past
:data:`SPOOL_THRESHOLD` is written to an anonymous temporary file as it arrives
(:class:`Spool` -> :class:`FileBlob`), which the operating system removes when it is closed (at
reset or stop) or when the process ends. Recorded media are :class:`PathBlob` (a file committed
next to a fixture file) and an assembled multipart upload is a :class:`JoinedBlob` of its parts,
so nothing large is ever copied or held whole in memory by the mock itself.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Sequence, Union

#: Bodies larger than this are spooled to a temporary file instead of kept in memory.
SPOOL_THRESHOLD = 4 * 1024 * 1024
#: Piece size for reading and serving spooled data.
CHUNK = 1024 * 1024

_HAS_PREAD = hasattr(os, "pread")


class Blob:
    """Immutable bytes of a known ``size``, read in pieces or whole."""

    __slots__ = ()

    @property
    def size(self) -> int:
        raise NotImplementedError

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """The bytes in order, at most ``chunk`` at a time."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what backs the blob (a temporary file is deleted); reading it afterwards fails."""

    @property
    def in_memory(self) -> bool:
        return False

    @property
    def memory(self) -> int:
        """Bytes of it held in memory (0 for a file on disk)."""
        return 0

    def read(self) -> bytes:
        """All the bytes (loads a spooled blob into memory: for small ones, or on request)."""
        return b"".join(self.chunks())

    def head(self, limit: int) -> bytes:
        """The first ``limit`` bytes at most."""
        out = bytearray()
        for piece in self.chunks(min(limit, CHUNK) or 1):
            out += piece[: limit - len(out)]
            if len(out) >= limit:
                break
        return bytes(out)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.size} bytes>"


class BytesBlob(Blob):
    """Bytes in memory."""

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def in_memory(self) -> bool:
        return True

    @property
    def memory(self) -> int:
        return len(self.data)

    def read(self) -> bytes:
        return self.data

    def head(self, limit: int) -> bytes:
        return self.data if len(self.data) <= limit else self.data[:limit]

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        data = self.data
        if len(data) <= chunk:
            if data:
                yield data
            return
        view = memoryview(data)
        for start in range(0, len(data), chunk):
            yield bytes(view[start : start + chunk])


EMPTY = BytesBlob()


class BlobGone(ValueError):
    """The blob was closed (its test ended): reading it fails (a download under way ends short)."""


class FileBlob(Blob):
    """Bytes in an (anonymous) temporary file this blob owns; safe to read from many threads.

    Reads and :meth:`close` take the blob's lock, so a file closed at reset while a download is
    under way is never read through a descriptor number the system has handed out again.
    """

    __slots__ = ("_file", "_lock", "_size")

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self._size = size
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def _read_at(self, offset: int, n: int) -> bytes:
        with self._lock:
            if self._file.closed:
                raise BlobGone("this file is gone: the mock drops uploads when their test ends (reset)")
            if _HAS_PREAD:
                return os.pread(self._file.fileno(), n, offset)
            self._file.seek(offset)  # pragma: no cover - platforms without os.pread (Windows)
            return self._file.read(n)  # pragma: no cover

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        offset = 0
        while offset < self._size:
            piece = self._read_at(offset, min(chunk, self._size - offset))
            if not piece:
                raise OSError(f"spooled file ended at {offset} of {self._size} bytes")
            offset += len(piece)
            yield piece

    def close(self) -> None:
        with self._lock:
            self._file.close()


class PathBlob(Blob):
    """A file on disk this blob does not own (recorded media next to a fixture file)."""

    __slots__ = ("_size", "path")

    def __init__(self, path: Path, size: Optional[int] = None) -> None:
        self.path = path
        self._size = path.stat().st_size if size is None else size

    @property
    def size(self) -> int:
        return self._size

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            while True:
                piece = handle.read(chunk)
                if not piece:
                    return
                yield piece


class JoinedBlob(Blob):
    """Blobs one after the other (a multipart upload's parts, in order); owns them."""

    __slots__ = ("_size", "parts")

    def __init__(self, parts: Sequence[Blob]) -> None:
        self.parts = tuple(parts)
        self._size = sum(part.size for part in self.parts)

    @property
    def size(self) -> int:
        return self._size

    @property
    def memory(self) -> int:
        return sum(part.memory for part in self.parts)

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        for part in self.parts:
            yield from part.chunks(chunk)

    def close(self) -> None:
        for part in self.parts:
            part.close()


class Arena:
    """One temporary file that many small blobs are appended to: one descriptor for all of them
    (a descriptor each would let a client that sends thousands of small files exhaust the
    process's descriptors). Its slices are freed together, by :meth:`close`."""

    __slots__ = ("_file", "_lock", "size")

    def __init__(self) -> None:
        self._file: Optional[IO[bytes]] = None
        self._lock = threading.Lock()
        #: Bytes appended so far (none is ever reclaimed before :meth:`close`).
        self.size = 0

    def add(self, blob: Blob) -> Blob:
        """A copy of ``blob``'s bytes, appended to the arena."""
        with self._lock:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="fal_mock-")  # noqa: SIM115 - closed by close()
            elif self._file.closed:
                raise BlobGone("this arena is closed")
            offset = self.size
            self._file.seek(offset)
            for piece in blob.chunks():
                self._file.write(piece)
            self._file.flush()
            self.size = offset + blob.size
        return ArenaSlice(self, offset, blob.size)

    def read_at(self, offset: int, n: int) -> bytes:
        with self._lock:
            if self._file is None or self._file.closed:
                raise BlobGone("this file is gone: the mock drops uploads when their test ends (reset)")
            if _HAS_PREAD:
                return os.pread(self._file.fileno(), n, offset)
            self._file.seek(offset)  # pragma: no cover - platforms without os.pread (Windows)
            return self._file.read(n)  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
            else:
                self._file = tempfile.TemporaryFile(prefix="fal_mock-")  # noqa: SIM115
                self._file.close()  # a closed arena stays closed


class ArenaSlice(Blob):
    """Bytes at ``offset`` in an :class:`Arena`; closing it frees nothing (the arena does)."""

    __slots__ = ("_size", "arena", "offset")

    def __init__(self, arena: Arena, offset: int, size: int) -> None:
        self.arena = arena
        self.offset = offset
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        done = 0
        while done < self._size:
            piece = self.arena.read_at(self.offset + done, min(chunk, self._size - done))
            if not piece:
                raise OSError(f"arena ended at {done} of {self._size} bytes")
            done += len(piece)
            yield piece


class Spool:
    """Collects bytes as they arrive: in memory up to ``threshold``, then in a temporary file."""

    __slots__ = ("_file", "_pieces", "size", "threshold")

    def __init__(self, threshold: int = SPOOL_THRESHOLD) -> None:
        self.threshold = threshold
        self.size = 0
        self._pieces: list[bytes] = []
        self._file: Optional[IO[bytes]] = None

    @classmethod
    def filled(cls, fill: Callable[[Spool], None], threshold: int = SPOOL_THRESHOLD) -> Blob:
        """The blob of what ``fill`` writes to a new spool (discarded if ``fill`` raises)."""
        spool = cls(threshold)
        try:
            fill(spool)
        except BaseException:
            spool.discard()
            raise
        return spool.blob()

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is None and self.size > self.threshold:
            self._file = tempfile.TemporaryFile(prefix="fal_mock-")  # noqa: SIM115 - the blob owns it
            for piece in self._pieces:
                self._file.write(piece)
            self._pieces.clear()
        if self._file is not None:
            self._file.write(data)
        else:
            self._pieces.append(bytes(data))

    def blob(self) -> Blob:
        """What was written, as a blob (the spool must not be written to afterwards)."""
        if self._file is None:
            return BytesBlob(b"".join(self._pieces))
        self._file.flush()
        return FileBlob(self._file, self.size)

    def discard(self) -> None:
        """Drop what was written (e.g. the body turned out to be too large)."""
        self._pieces.clear()
        if self._file is not None:
            self._file.close()
