"""Blob upload sessions: monolithic, streamed and chunked, resumable on any process.

An upload's bytes accumulate in storage under ``uploads/<id>``; its offset and the saved hash
state live in the metadata store. Each request that writes takes the upload's lease first, so
two requests never write one upload at once, whichever process or replica they reach.

**Checkpoints.** While a request streams, every ``checkpoint_every`` bytes of the upload the
bytes so far are made durable in the background and then recorded with the hash state of
exactly those bytes (``upload_checkpoints``). A request that fails half way, whose client hangs
up, or whose process dies leaves the upload at its newest durable checkpoint (or where the
request started); the next writer discards the bytes past it. A client hanging up is a normal
event: logged in one line, counted (``UploadCounters``), never an internal error.

**Leases** name the process that holds them (``moorage.process_identity``). A lease held by a
process that no longer runs on this host is taken over at once; one held elsewhere, when it
runs out (``lease`` seconds, renewed every third of that while a request streams).

**Where an upload is.** The offset is the number of bytes received; clients see it as
``Range: 0-<offset - 1>`` and ``Upload-Offset: <offset>`` (``api/v2/uploads.py`` has the
convention for an empty upload).

Completion verifies the digest, makes the bytes durable and moves them to their
content-addressed key in one atomic step before the blob is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from moorage import process_identity
from moorage.digest import Digest
from moorage.errors import ClientDisconnected, ErrorCode, RegistryError
from moorage.hashing import Hasher, new_hasher, restore_hasher
from moorage.meta.base import MetadataStore, UploadBusy, UploadNotFound, UploadOffsetMismatch
from moorage.model import Upload
from moorage.registry.layout import blob_key, upload_key
from moorage.registry.upload_checkpoints import Checkpoint, Checkpoints
from moorage.storage.base import StorageDriver, Writer, WriterBusy

log = logging.getLogger("moorage.uploads")

Body = AsyncIterator[bytes]

#: Bytes of an upload between two checkpoints, by default.
CHECKPOINT_EVERY = 64 * 1024 * 1024
#: Seconds a lease lasts unless renewed, by default.
LEASE = 30.0

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


@dataclass(slots=True)
class UploadCounters:
    """Events of this process's upload service, for metrics."""

    #: Requests whose client closed the connection before the body was complete.
    client_aborts: int = 0
    #: Leases taken over from a process that had died.
    leases_taken_over: int = 0
    #: Checkpoints recorded.
    checkpoints: int = 0


class _Lease:
    """The lease one request holds on an upload: renewed while the request works on it, and
    the fencing token of the checkpoints it records (one change at a time, so that a renewal
    never invalidates the token a checkpoint is being recorded with)."""

    def __init__(self, uploads: Uploads, upload: Upload) -> None:
        self._uploads = uploads
        self.upload = upload
        self._renew_at = time.monotonic() + uploads.lease / 3
        self._changing = asyncio.Lock()

    @property
    def due(self) -> bool:
        """Whether a third of the lease has passed since it was last renewed."""
        return time.monotonic() >= self._renew_at

    async def keep(self) -> None:
        """Renew the lease once a third of it has passed; 416 if it was lost meanwhile. A
        request that keeps working keeps its lease; one whose process died loses it."""
        if not self.due:
            return
        async with self._changing:
            lease_until = self._uploads.clock() + self._uploads.lease
            if not await self._uploads.meta.renew_upload(
                self.upload.id, self.upload.lease_until, lease_until
            ):
                raise _lost_lease()
            self.upload.lease_until = lease_until
            self._renew_at = time.monotonic() + self._uploads.lease / 3

    async def record(self, checkpoint: Checkpoint) -> None:
        """Record a durable checkpoint, keeping the lease; 416 if it was lost meanwhile."""
        async with self._changing:
            if not await self._uploads.meta.checkpoint_upload(
                self.upload.id,
                self.upload.lease_until,
                checkpoint.offset,
                checkpoint.state,
                self._uploads.clock(),
            ):
                raise _lost_lease()
        self._uploads.counters.checkpoints += 1


def _busy() -> RegistryError:
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_INVALID,
        "another request is writing to this upload; retry when it has finished",
        status=416,
    )


def _lost_lease() -> RegistryError:
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_INVALID,
        "this request lost the upload to another one; resume from the upload's offset",
        status=416,
    )


class Uploads:
    def __init__(
        self,
        storage: StorageDriver,
        meta: MetadataStore,
        *,
        ttl: float = 24 * 3600,
        lease: float = LEASE,
        checkpoint_every: int = CHECKPOINT_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.meta = meta
        self.ttl = ttl
        self.lease = lease
        #: Bytes between checkpoints while a request streams (0: none).
        self.checkpoint_every = checkpoint_every
        self.clock = clock
        self.counters = UploadCounters()
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
            lease_owner=str(process_identity.current()) if leased else "",
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
            raise _busy() from None
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
        """``_lease_or_take_over``, but if the request is cancelled (its client went away)
        while the lease is being taken, the lease is given back once taken instead of being
        left held."""
        task = asyncio.ensure_future(self._lease_or_take_over(repository, upload_id, offset, now))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back)
            raise

    async def _lease_or_take_over(
        self, repository: str, upload_id: str, offset: int | None, now: float
    ) -> Upload:
        """Take the upload's lease; from its holder too if that process no longer runs."""
        owner = str(process_identity.current())
        try:
            return await self.meta.acquire_upload(
                upload_id, repository, offset, now, self.lease, owner
            )
        except UploadBusy as busy:
            if not busy.owner or not process_identity.has_exited(busy.owner):
                raise
            holder, held_as = busy.owner, busy.lease_until
        upload = await self.meta.acquire_upload(
            upload_id, repository, offset, now, self.lease, owner, take_over=held_as
        )
        self.counters.leases_taken_over += 1
        log.info(
            "upload %s in %s: took the lease over from %s, which no longer runs; the upload "
            "resumes at byte %d",
            upload.id,
            repository,
            holder,
            upload.offset,
        )
        return upload

    def _give_back(self, task: asyncio.Future[Upload]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        upload = task.result()
        kept = Checkpoint(upload.offset, upload.hash_state)
        release = asyncio.ensure_future(self._release(upload, kept))
        self._background.add(release)
        release.add_done_callback(self._background.discard)

    async def _release(self, upload: Upload, progress: Checkpoint) -> None:
        """Record progress and drop the lease; runs to the end even if the request is cancelled."""
        await asyncio.shield(
            self.meta.release_upload(
                upload.id, upload.lease_until, progress.offset, progress.state, self.clock()
            )
        )

    def _checkpoints(self, lease: _Lease) -> Checkpoints:
        upload = lease.upload
        start = Checkpoint(upload.offset, upload.hash_state)
        return Checkpoints(self.checkpoint_every, start, lease.record)

    async def _receive(
        self, lease: _Lease, body: Body, expected: int | None, checkpoints: Checkpoints
    ) -> tuple[int, Hasher | None]:
        """Append ``body`` to the upload, checkpointing on the way; returns the new offset and
        the running hash. On failure ``checkpoints.kept`` is the progress to keep."""
        upload = lease.upload
        hasher = restore_hasher("sha256", upload.hash_state)
        try:
            writer: Writer = await self.storage.open_writer(upload_key(upload.id), upload.offset)
        except WriterBusy:
            # The lease's holder died as far as the metadata can tell, yet its writer is still
            # open: a process stalled past its lease. Never write beside it.
            raise _busy() from None
        position = upload.offset
        try:
            async for chunk in body:
                if lease.due:
                    await lease.keep()
                checkpoints.check()
                if expected is not None and position - upload.offset + len(chunk) > expected:
                    raise RegistryError(
                        ErrorCode.SIZE_INVALID, f"body is longer than the {expected} bytes declared"
                    )
                while len(chunk) >= checkpoints.bytes_to_due(position):
                    head = checkpoints.bytes_to_due(position)
                    position = await self._write(writer, hasher, chunk[:head], position)
                    chunk = chunk[head:]
                    state = hasher.state() if hasher is not None else None
                    checkpoints.started(Checkpoint(position, state), await writer.checkpoint())
                if chunk:
                    position = await self._write(writer, hasher, chunk, position)
            await writer.close()
            await checkpoints.finish()
        except BaseException:
            await writer.abort()  # waits for the checkpoints under way to be durable (or fail)
            await checkpoints.settle()
            raise
        received = position - upload.offset
        if expected is not None and received != expected:
            raise RegistryError(
                ErrorCode.SIZE_INVALID,
                f"received {received} bytes but {expected} were declared",
            )
        return position, hasher

    @staticmethod
    async def _write(writer: Writer, hasher: Hasher | None, data: bytes, position: int) -> int:
        if hasher is not None:
            hasher.update(data)
        await writer.write(data)
        return position + len(data)

    def _client_left(
        self, upload: Upload, exc: ClientDisconnected, kept: Checkpoint | None
    ) -> None:
        """Log (one line) and count a client that hung up mid-body."""
        self.counters.client_aborts += 1
        exc.reported = True
        outcome = (
            f"the upload stays at byte {kept.offset}"
            if kept is not None
            else "the upload is dropped (a single POST cannot be resumed)"
        )
        log.info(
            "client aborted upload %s to %s after %d bytes of its request body; %s",
            upload.id,
            upload.repository,
            exc.received,
            outcome,
        )

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
        lease = _Lease(self, upload)
        checkpoints = self._checkpoints(lease)
        progress = checkpoints.kept
        try:
            offset, hasher = await self._receive(lease, body, expected, checkpoints)
            progress = Checkpoint(offset, hasher.state() if hasher is not None else None)
        except BaseException as exc:
            progress = checkpoints.kept
            if isinstance(exc, ClientDisconnected):
                self._client_left(upload, exc, progress)
            raise
        finally:
            await self._release(upload, progress)
        upload.offset, upload.hash_state = progress.offset, progress.state
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
        return await self._complete(upload, digest, body, expected, resumable=True)

    async def monolithic(
        self, repository: str, digest: Digest, body: Body, content_length: int | None
    ) -> int:
        """POST with ``?digest=``: the whole blob in one request. The client never learns the
        session, so one that fails is dropped rather than kept for a resume."""
        upload = await self.start(repository, leased=True)
        return await self._complete(upload, digest, body, content_length, resumable=False)

    async def _complete(
        self,
        upload: Upload,
        digest: Digest,
        body: Body,
        content_length: int | None,
        *,
        resumable: bool,
    ) -> int:
        lease = _Lease(self, upload)
        checkpoints = self._checkpoints(lease)
        progress: Checkpoint | None = None
        try:
            offset, hasher = await self._receive(lease, body, content_length, checkpoints)
            progress = Checkpoint(offset, hasher.state() if hasher is not None else None)
            if hasher is None or digest.algorithm != hasher.algorithm:
                hasher = await self._rehash(lease, digest.algorithm)
            actual = hasher.hexdigest()
        except BaseException as exc:
            # Keep the session usable: the client may resume from what was kept.
            kept = progress or checkpoints.kept
            if isinstance(exc, ClientDisconnected):
                self._client_left(upload, exc, kept if resumable else None)
            if resumable:
                await self._release(upload, kept)
            else:
                await self._drop(upload.id)
            raise
        if actual != digest.hex:
            await self._discard(upload.id)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"uploaded content has digest {digest.algorithm}:{actual}, not {digest}",
            )
        await lease.keep()  # nobody took the upload over while it was hashed
        await self.storage.commit(upload_key(upload.id), blob_key(digest))
        await self.meta.add_blob(upload.repository, str(digest), offset)
        await self.meta.delete_upload(upload.id)
        return offset

    async def _rehash(self, lease: _Lease, algorithm: str) -> Hasher:
        hasher = new_hasher(algorithm)
        async for chunk in self.storage.read(upload_key(lease.upload.id)):
            await lease.keep()
            hasher.update(chunk)
        return hasher

    async def _discard(self, upload_id: str) -> None:
        await self.storage.delete(upload_key(upload_id))
        await self.meta.delete_upload(upload_id)

    async def _drop(self, upload_id: str) -> None:
        """Discard an upload nobody can resume, even if the request is cancelled meanwhile;
        if that fails, it is purged once it expires."""
        try:
            await asyncio.shield(self._discard(upload_id))
        except Exception as exc:
            log.warning("could not discard upload %s yet: %s", upload_id, exc)

    async def cancel(self, repository: str, upload_id: str) -> None:
        upload = await self._acquire(repository, upload_id, None)
        await self._discard(upload.id)

    async def purge_expired(self) -> int:
        """Delete uploads idle for longer than the TTL; how many were removed."""
        expired = await self.meta.expired_uploads(self.clock() - self.ttl)
        for upload in expired:
            await self._discard(upload.id)
        return len(expired)
