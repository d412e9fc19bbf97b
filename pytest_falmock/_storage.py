"""Storage routes: upload tokens, single and multipart uploads, and serving files.

- ``storage.token``: ``POST /fal/rest/storage/auth/token`` -> ``{token, token_type, base_url, expires_at}``;
- ``cdn.upload``: ``POST /fal/cdn/files/upload`` (raw bytes) -> ``{access_url}``;
- ``storage.initiate``: ``POST /fal/rest/storage/upload/initiate`` -> ``{upload_url, file_url}``,
  then ``files.put``: ``PUT <upload_url>`` (raw bytes) -> ``{file_url}``;
- ``cdn.upload_multipart``: ``POST /fal/cdn/files/upload/multipart`` -> ``{access_url, uploadId}``;
- ``storage.initiate_multipart``: ``POST /fal/rest/storage/upload/initiate-multipart``
  -> ``{upload_url, file_url}``;
- ``files.upload_part``: ``PUT <file url>/multipart/<uploadId>/<n>`` -> ``ETag`` header and
  ``{partNumber, etag}``;
- ``files.complete_multipart``: ``POST <file url>/multipart/<uploadId>/complete`` with
  ``{"parts": [...]}`` -> ``{access_url}`` (400 naming a missing or mismatched part);
- ``files.get``: ``GET <file url>`` -> the bytes with their content type; ``files.generated``:
  ``GET /fal/files/generated/<spec>/<name>`` -> generated media (:mod:`._media`), for the URLs
  a registered stub hands out only, made on the first download and then served from the store.

Per-test files are bounded (:class:`~._files.StoreFull`): an upload, a part, a new multipart
upload or a generated file past ``Settings.max_files`` / ``Settings.max_file_bytes`` is
answered 507 Insufficient Storage with a ``detail`` naming the bound.

``fal_client`` uses the first two (and, over 100 MiB, the CDN multipart flow); ``@fal-ai/client``
initiates and PUTs (and, over 90 MiB, uses the storage multipart flow). A multipart ``upload_url``
is ``<file url>/multipart/<uploadId>``, so both clients' parts and completions land on the same
two routes; a part answers its ETag both as a header (``fal_client`` reads it there) and in the
JSON body (``@fal-ai/client`` reads it there).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Callable

from ._blob import BytesBlob
from ._files import FileEntry, FileKey, MultipartError, StoreFull, media_type, new_file_id, safe_name
from ._media import MediaSpec, MediaUnavailable, generate
from ._operation import Operation, Route
from ._reply import Reply, detail
from ._stores import Stores
from ._urls import GENERATED, file_url, generated_url, multipart_url, service_url

Handler = Callable[[Operation], Reply]
#: Headers of a served file: a browser shows it sandboxed (no script, no same-origin access).
SERVED_FILE_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
#: What a request that would pass the file store's bounds is answered.
INSUFFICIENT_STORAGE = 507


def _full(exc: StoreFull) -> Reply:
    return detail(INSUFFICIENT_STORAGE, str(exc))


class Storage:
    """Answers the storage and file routes from the stores' file store."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    @property
    def handlers(self) -> dict[Route, Handler]:
        return {
            "storage.token": self._token,
            "storage.initiate": self._initiate,
            "storage.initiate_multipart": self._initiate_multipart,
            "cdn.upload": self._cdn_upload,
            "cdn.upload_multipart": self._cdn_multipart,
            "files.put": self._put,
            "files.get": self._get,
            "files.generated": self._generated,
            "files.upload_part": self._part,
            "files.complete_multipart": self._complete,
        }

    @staticmethod
    def _new_file(op: Operation, name: str, content_type: str) -> tuple[FileKey, str]:
        """A fresh file key ``(id, safe name)`` and its URL."""
        key = (new_file_id(), safe_name(name, content_type))
        return key, file_url(op.base_url, *key)

    @staticmethod
    def _key(op: Operation) -> FileKey:
        assert op.file_id is not None
        assert op.file_name is not None
        return op.file_id, op.file_name

    # -- tokens and single uploads ----------------------------------------------------------
    def _token(self, op: Operation) -> Reply:
        expires = datetime.now(timezone.utc) + timedelta(hours=1)
        return Reply(
            200,
            {
                "token": secrets.token_hex(16),
                "token_type": "Bearer",
                "base_url": service_url(op.base_url, "cdn"),
                "expires_at": expires.isoformat(),
            },
        )

    def _cdn_upload(self, op: Operation) -> Reply:
        content_type = media_type(op.headers.get("content-type", ""))
        key, url = self._new_file(op, op.headers.get("x-fal-file-name", ""), content_type)
        try:
            self.stores.add_file(FileEntry(key, op.body, content_type, "upload", url, "cdn"))
        except StoreFull as exc:
            return _full(exc)
        return Reply(200, {"access_url": url})

    def _initiate_spec(self, op: Operation) -> tuple[FileKey, str, str]:
        spec = op.input if isinstance(op.input, dict) else {}
        name = spec.get("file_name") or spec.get("filename") or ""
        content_type = media_type(str(spec.get("content_type") or ""))
        key, url = self._new_file(op, str(name), content_type)
        return key, url, content_type

    def _initiate(self, op: Operation) -> Reply:
        key, url, content_type = self._initiate_spec(op)
        self.stores.issue_upload(key, content_type)
        return Reply(200, {"upload_url": url, "file_url": url})

    def _put(self, op: Operation) -> Reply:
        """Store the bytes ``PUT`` to an upload URL this mock issued; each URL takes one ``PUT``."""
        key = self._key(op)
        declared = self.stores.files.take_issued(key)
        if declared is None:
            if self.stores.files.get(key) is not None:
                return detail(409, f"{op.path} already holds an upload: each upload URL takes one PUT")
            return detail(
                404,
                f"No upload URL {op.path} was issued by this mock: get one from "
                "POST .../storage/upload/initiate",
            )
        url = file_url(op.base_url, *key)
        content_type = media_type(op.headers.get("content-type", ""), declared)
        try:
            self.stores.add_file(FileEntry(key, op.body, content_type, "upload", url, "storage"))
        except StoreFull as exc:
            self.stores.issue_upload(key, declared)  # the URL stays usable for a later PUT
            return _full(exc)
        return Reply(200, {"file_url": url})

    # -- multipart --------------------------------------------------------------------------
    def _begin(self, key: FileKey, url: str, content_type: str) -> str:
        """A new multipart upload's id; a request that began before the last reset gets an id
        nothing knows (its parts answer 404), so it leaves nothing in the next test."""
        return self.stores.begin_multipart(key, url, content_type) or new_file_id()

    def _cdn_multipart(self, op: Operation) -> Reply:
        content_type = media_type(op.headers.get("content-type", ""))
        key, url = self._new_file(op, op.headers.get("x-fal-file-name", ""), content_type)
        try:
            upload_id = self._begin(key, url, content_type)
        except StoreFull as exc:
            return _full(exc)
        return Reply(200, {"access_url": url, "uploadId": upload_id})

    def _initiate_multipart(self, op: Operation) -> Reply:
        key, url, content_type = self._initiate_spec(op)
        try:
            upload_id = self._begin(key, url, content_type)
        except StoreFull as exc:
            return _full(exc)
        return Reply(200, {"upload_url": multipart_url(url, upload_id), "file_url": url})

    @staticmethod
    def _no_upload(op: Operation) -> Reply:
        return detail(
            404,
            f"No multipart upload {op.upload_id} in progress at {op.path} (never initiated, "
            "already completed, or dropped when the test ended)",
        )

    def _part(self, op: Operation) -> Reply:
        assert op.upload_id is not None
        assert op.part_number is not None
        try:
            etag = self.stores.files.add_part(op.upload_id, self._key(op), op.part_number, op.body)
        except StoreFull as exc:
            return _full(exc)
        if etag is None:
            return self._no_upload(op)
        return Reply(200, {"partNumber": op.part_number, "etag": etag}, {"ETag": etag})

    def _complete(self, op: Operation) -> Reply:
        assert op.upload_id is not None
        listed = op.input.get("parts") if isinstance(op.input, dict) else None
        try:
            entry = self.stores.files.complete_multipart(op.upload_id, self._key(op), listed)
        except MultipartError as exc:
            return detail(400, f"Cannot complete multipart upload {op.upload_id}: {exc}")
        if entry is None:
            return self._no_upload(op)
        return Reply(200, {"access_url": entry.url})

    # -- downloads --------------------------------------------------------------------------
    def _get(self, op: Operation) -> Reply:
        entry = self.stores.files.get(self._key(op))
        if entry is None:
            return detail(404, f"No uploaded file at {op.path}")
        # whatever was uploaded, it never runs as a page of the mock's origin
        headers = dict(SERVED_FILE_HEADERS)
        return Reply(200, raw=entry.blob, content_type=entry.content_type, headers=headers)

    def _generated(self, op: Operation) -> Reply:
        """A generated file: from the store once made; made (and kept) on its first download,
        for a URL a registered stub hands out; any other path is a 404, never generated."""
        segment, name = self._key(op)
        key = (f"{GENERATED}/{segment}", name)
        entry = self.stores.files.get(key)
        if entry is not None:
            return Reply(200, raw=entry.blob, content_type=entry.content_type)
        spec = MediaSpec.parse(segment)
        if spec is None or not self.stores.hands_out((segment, name)):
            return detail(404, f"No generated media at {op.path}")
        try:
            data, content_type = generate(spec, name)
        except KeyError:  # pragma: no cover - a stub hands out only names its spec can make
            return detail(404, f"No generated media at {op.path}")
        except MediaUnavailable as exc:
            return detail(exc.status, exc.detail)
        url = generated_url(op.base_url, segment, name)
        try:
            self.stores.add_file(FileEntry(key, BytesBlob(data), content_type, "generated", url))
        except StoreFull as exc:
            return _full(exc)
        return Reply(200, raw=BytesBlob(data), content_type=content_type)
