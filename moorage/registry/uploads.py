"""Blob upload sessions: monolithic, streamed and chunked, resumable on any process.

An upload's bytes accumulate in storage under ``uploads/<id>``; its offset and the saved hash
state live in the metadata store. Each request that writes takes the upload's lease first, so
two requests never write one upload at once, whichever process or replica they reach. A
request that fails half way leaves the recorded offset unchanged and the next writer discards
the partial bytes. Completion verifies the digest, makes the bytes durable and moves them to
their content-addressed key in one atomic step before the blob is recorded.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.hashing import Hasher, new_hasher, restore_hasher
from moorage.meta.base import (
    MetadataStore,
    Upload,
    UploadBusy,
    UploadNotFound,
    UploadOffsetMismatch,
)
from moorage.registry.layout import blob_key, upload_key
from moorage.storage.base import StorageDriver, Writer

Body = AsyncIterator[bytes]

_UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


@dataclass(frozen=True, slots=True)
class ContentRange:
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @classmethod
    def parse(cls, value: str) -> ContentRange:
        match = _CONTENT_RANGE_RE.fullmatch(value.strip())
        if match is None or int(match.group(2)) < int(match.group(1)):
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                f"invalid Content-Range {value[:100]!r}: expected '<start>-<end>'",
                status=416,
            )
        return cls(int(match.group(1)), int(match.group(2)))


class UploadOutOfOrder(RegistryError):
    """416: the chunk does not start where the upload ends. Carries the upload for headers."""

    def __init__(self, upload_id: str, repository: str, offset: int, message: str) -> None:
        super().__init__(ErrorCode.BLOB_UPLOAD_INVALID, message, status=416)
        self.upload_id = upload_id
        self.repository = repository
        self.offset = offset


def _expected_length(content_range: ContentRange | None, content_length: int | None) -> int | None:
    """How many bytes the request body must hold, from its Content-Range and Content-Length."""
    if content_range is None:
        return content_length
    if content_length is not None and content_length != content_range.length:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f"Content-Range covers {content_range.length} bytes but Content-Length "
            f"is {content_length}",
            status=416,
        )
    return content_range.length


class Uploads:
    def __init__(
        self,
        storage: StorageDriver,
        meta: MetadataStore,
        *,
        ttl: float = 24 * 3600,
        lease: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.meta = meta
        self.ttl = ttl
        self.lease = lease
        self.clock = clock
        self._background: set[asyncio.Future[None]] = set()

    @staticmethod
    def _unknown(upload_id: str) -> RegistryError:
        return RegistryError(
            ErrorCode.BLOB_UPLOAD_UNKNOWN, f"upload {upload_id[:64]!r} is unknown or has expired"
        )

    async def start(self, repository: str, *, leased: bool = False) -> Upload:
        now = self.clock()
        upload = Upload(
            id=str(uuid.uuid4()),
            repository=repository,
            offset=0,
            hash_state=new_hasher("sha256").state(),
            created_at=now,
            updated_at=now,
            lease_until=now + self.lease if leased else 0.0,
        )
        writer = await self.storage.open_writer(upload_key(upload.id), 0)
        await writer.close()
        await self.meta.create_upload(upload)
        return upload

    async def status(self, repository: str, upload_id: str) -> Upload:
        upload = None
        if _UPLOAD_ID_RE.fullmatch(upload_id):
            upload = await self.meta.get_upload(upload_id, repository)
        if upload is None or upload.updated_at < self.clock() - self.ttl:
            raise self._unknown(upload_id)
        return upload

    async def _acquire(self, repository: str, upload_id: str, offset: int | None) -> Upload:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise self._unknown(upload_id)
        now = self.clock()
        try:
            upload = await self._take_lease(repository, upload_id, offset, now)
        except UploadNotFound:
            raise self._unknown(upload_id) from None
        except UploadBusy:
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                "another request is writing to this upload; retry when it has finished",
                status=416,
            ) from None
        except UploadOffsetMismatch as exc:
            raise UploadOutOfOrder(
                upload_id,
                repository,
                exc.offset,
                f"chunk starts at byte {offset} but the upload has {exc.offset} bytes",
            ) from None
        if upload.updated_at < now - self.ttl:
            await self._discard(upload.id)
            raise self._unknown(upload_id)
        return upload

    async def _take_lease(
        self, repository: str, upload_id: str, offset: int | None, now: float
    ) -> Upload:
        """``acquire_upload``, but if the request is cancelled (its client went away) while the
        lease is being taken, the lease is given back once taken instead of being left held."""
        task = asyncio.ensure_future(
            self.meta.acquire_upload(upload_id, repository, offset, now, self.lease)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back)
            raise

    def _give_back(self, task: asyncio.Future[Upload]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        upload = task.result()
        release = asyncio.ensure_future(self._release(upload, upload.offset, upload.hash_state))
        self._background.add(release)
        release.add_done_callback(self._background.discard)

    async def _release(self, upload: Upload, offset: int, state: bytes | None) -> None:
        """Record progress and drop the lease; runs to the end even if the request is cancelled."""
        await asyncio.shield(
            self.meta.release_upload(upload.id, upload.lease_until, offset, state, self.clock())
        )

    async def _renew(self, upload: Upload) -> None:
        lease_until = self.clock() + self.lease
        if not await self.meta.renew_upload(upload.id, upload.lease_until, lease_until):
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                "this request lost the upload to another one; resume from the upload's offset",
                status=416,
            )
        upload.lease_until = lease_until

    async def _receive(
        self, upload: Upload, body: Body, expected: int | None
    ) -> tuple[int, Hasher | None]:
        """Append ``body`` to the upload; returns the new offset and the running hash."""
        hasher = restore_hasher("sha256", upload.hash_state)
        writer: Writer = await self.storage.open_writer(upload_key(upload.id), upload.offset)
        received = 0
        renew_at = time.monotonic() + self.lease / 3
        try:
            async for chunk in body:
                if time.monotonic() > renew_at:
                    # A long request keeps its lease; one whose process died loses it.
                    await self._renew(upload)
                    renew_at = time.monotonic() + self.lease / 3
                received += len(chunk)
                if expected is not None and received > expected:
                    raise RegistryError(
                        ErrorCode.SIZE_INVALID, f"body is longer than the {expected} bytes declared"
                    )
                if hasher is not None:
                    hasher.update(chunk)
                await writer.write(chunk)
        except BaseException:
            await writer.abort()
            raise
        await writer.close()
        if expected is not None and received != expected:
            raise RegistryError(
                ErrorCode.SIZE_INVALID,
                f"received {received} bytes but {expected} were declared",
            )
        return upload.offset + received, hasher

    async def append(
        self,
        repository: str,
        upload_id: str,
        body: Body,
        content_range: ContentRange | None,
        content_length: int | None,
    ) -> Upload:
        """PATCH: add a chunk (or a stream) at the end of the upload."""
        expected = _expected_length(content_range, content_length)
        upload = await self._acquire(
            repository, upload_id, None if content_range is None else content_range.start
        )
        offset, state = upload.offset, upload.hash_state
        try:
            offset, hasher = await self._receive(upload, body, expected)
            state = hasher.state() if hasher is not None else None
        finally:
            await self._release(upload, offset, state)
        upload.offset, upload.hash_state = offset, state
        return upload

    async def finish(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        body: Body,
        content_range: ContentRange | None,
        content_length: int | None,
    ) -> int:
        """PUT: append the last chunk (if any), verify the digest, store the blob; its size."""
        expected = _expected_length(content_range, content_length)
        upload = await self._acquire(
            repository, upload_id, None if content_range is None else content_range.start
        )
        return await self._complete(upload, digest, body, expected)

    async def monolithic(
        self, repository: str, digest: Digest, body: Body, content_length: int | None
    ) -> int:
        """POST with ``?digest=``: the whole blob in one request."""
        upload = await self.start(repository, leased=True)
        return await self._complete(upload, digest, body, content_length)

    async def _complete(
        self, upload: Upload, digest: Digest, body: Body, content_length: int | None
    ) -> int:
        offset, state = upload.offset, upload.hash_state
        try:
            offset, hasher = await self._receive(upload, body, content_length)
            state = hasher.state() if hasher is not None else None
            if hasher is None or digest.algorithm != hasher.algorithm:
                hasher = await self._rehash(upload.id, digest.algorithm)
            actual = hasher.hexdigest()
        except BaseException:
            # Keep the session usable: the client may retry from the recorded offset.
            await self._release(upload, offset, state)
            raise
        if actual != digest.hex:
            await self._discard(upload.id)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"uploaded content has digest {digest.algorithm}:{actual}, not {digest}",
            )
        await self.storage.commit(upload_key(upload.id), blob_key(digest))
        await self.meta.add_blob(upload.repository, str(digest), offset)
        await self.meta.delete_upload(upload.id)
        return offset

    async def _rehash(self, upload_id: str, algorithm: str) -> Hasher:
        hasher = new_hasher(algorithm)
        async for chunk in self.storage.read(upload_key(upload_id)):
            hasher.update(chunk)
        return hasher

    async def _discard(self, upload_id: str) -> None:
        await self.storage.delete(upload_key(upload_id))
        await self.meta.delete_upload(upload_id)

    async def cancel(self, repository: str, upload_id: str) -> None:
        upload = await self._acquire(repository, upload_id, None)
        await self._discard(upload.id)

    async def purge_expired(self) -> int:
        """Delete uploads idle for longer than the TTL; how many were removed."""
        expired = await self.meta.expired_uploads(self.clock() - self.ttl)
        for upload in expired:
            await self._discard(upload.id)
        return len(expired)
