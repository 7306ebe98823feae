"""Upload sessions and their leases: creating, finding and expiring sessions, and which
request may write one now.

A session's bytes are in storage under ``uploads/<id>``; its offset and saved hash state are in
the metadata store. A request that writes takes the session's lease first, an atomic
compare-and-set in the metadata store, so two requests never write one upload at once,
whichever process or replica they reach. The lease's value is the fencing token: renewals,
checkpoints and the release compare it, so a request that lost its lease can change nothing.

Leases name the process that holds them (``moorage.process_identity``). A lease held by a
process that no longer runs on this host is taken over at once; one held elsewhere, when it
runs out (``lease`` seconds, renewed every third of that while a request works on the upload).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from moorage import process_identity
from moorage.errors import ErrorCode, RegistryError
from moorage.hashing import new_hasher
from moorage.meta.errors import (
    BlobBeingDeleted,
    UploadBusy,
    UploadNotFound,
    UploadOffsetMismatch,
)
from moorage.meta.protocols import UploadStore
from moorage.model import Upload
from moorage.registry.layout import upload_key
from moorage.registry.upload_checkpoints import Checkpoint
from moorage.storage.base import StorageDriver

log = logging.getLogger("moorage.uploads")

#: Seconds a lease lasts unless renewed, by default.
LEASE = 30.0

_UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class UploadOutOfOrder(RegistryError):
    """416: the chunk does not start where the upload ends. Carries the upload for headers."""

    def __init__(self, upload_id: str, repository: str, offset: int, message: str) -> None:
        super().__init__(ErrorCode.BLOB_UPLOAD_INVALID, message, status=416)
        self.upload_id = upload_id
        self.repository = repository
        self.offset = offset


def busy() -> RegistryError:
    """416: another request is writing to the upload."""
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_INVALID,
        "another request is writing to this upload; retry when it has finished",
        status=416,
    )


def being_deleted(digest: str) -> RegistryError:
    """503: garbage collection is deleting this blob's bytes right now."""
    return RegistryError(
        ErrorCode.UNKNOWN,
        f"blob {digest} is being deleted by garbage collection; retry in a moment",
        status=503,
    )


def lost_lease() -> RegistryError:
    """416: the request's lease was taken by another one meanwhile."""
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_INVALID,
        "this request lost the upload to another one; resume from the upload's offset",
        status=416,
    )


@dataclass(slots=True)
class UploadCounters:
    """Events of this process's upload service, for metrics."""

    #: Requests whose client closed the connection before the body was complete.
    client_aborts: int = 0
    #: Leases taken over from a process that had died.
    leases_taken_over: int = 0
    #: Checkpoints recorded.
    checkpoints: int = 0


class UploadSessions:
    def __init__(
        self,
        storage: StorageDriver,
        meta: UploadStore,
        *,
        ttl: float,
        lease: float,
        clock: Callable[[], float],
        counters: UploadCounters,
    ) -> None:
        self.storage = storage
        self.meta = meta
        #: Seconds a session may stay idle before it expires.
        self.ttl = ttl
        #: Seconds a lease lasts unless renewed.
        self.lease = lease
        self.clock = clock
        self.counters = counters
        self._background: set[asyncio.Future[None]] = set()

    @staticmethod
    def unknown(upload_id: str) -> RegistryError:
        return RegistryError(
            ErrorCode.BLOB_UPLOAD_UNKNOWN, f"upload {upload_id[:64]!r} is unknown or has expired"
        )

    async def start(
        self, repository: str, *, leased: bool = False, digest: str | None = None
    ) -> Upload:
        """A new, empty session; ``leased``: its lease held by this request, which completes
        it as ``digest`` if given (503 while garbage collection deletes that blob)."""
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
            digest=digest,
        )
        writer = await self.storage.open_writer(upload_key(upload.id), 0)
        await writer.close()
        try:
            await self.meta.create_upload(upload)
        except BlobBeingDeleted as exc:
            await self.storage.delete(upload_key(upload.id))
            raise being_deleted(exc.digest) from None
        return upload

    async def status(self, repository: str, upload_id: str) -> Upload:
        upload = None
        if _UPLOAD_ID_RE.fullmatch(upload_id):
            upload = await self.meta.get_upload(upload_id, repository)
        if upload is None or upload.updated_at < self.clock() - self.ttl:
            raise self.unknown(upload_id)
        return upload

    async def acquire(
        self,
        repository: str,
        upload_id: str,
        offset: int | None,
        *,
        completing: str | None = None,
    ) -> Upload:
        """Take the session's lease, for a request that writes from ``offset`` (None: from
        wherever the upload ends), and completes the upload as ``completing`` if given (503
        while garbage collection deletes that blob)."""
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise self.unknown(upload_id)
        now = self.clock()
        try:
            upload = await self._take_lease(repository, upload_id, offset, now, completing)
        except BlobBeingDeleted as exc:
            raise being_deleted(exc.digest) from None
        except UploadNotFound:
            raise self.unknown(upload_id) from None
        except UploadBusy:
            raise busy() from None
        except UploadOffsetMismatch as exc:
            raise UploadOutOfOrder(
                upload_id,
                repository,
                exc.offset,
                f"chunk starts at byte {offset} but the upload has {exc.offset} bytes",
            ) from None
        if upload.updated_at < now - self.ttl:
            await self.discard(upload.id)
            raise self.unknown(upload_id)
        return upload

    async def _take_lease(
        self,
        repository: str,
        upload_id: str,
        offset: int | None,
        now: float,
        completing: str | None,
    ) -> Upload:
        """``_lease_or_take_over``, but if the request is cancelled (its client went away)
        while the lease is being taken, the lease is given back once taken instead of being
        left held."""
        task = asyncio.ensure_future(
            self._lease_or_take_over(repository, upload_id, offset, now, completing)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back)
            raise

    async def _lease_or_take_over(
        self,
        repository: str,
        upload_id: str,
        offset: int | None,
        now: float,
        completing: str | None,
    ) -> Upload:
        """Take the upload's lease; from its holder too if that process no longer runs."""
        owner = str(process_identity.current())
        try:
            return await self.meta.acquire_upload(
                upload_id, repository, offset, now, self.lease, owner, completing=completing
            )
        except UploadBusy as held:
            if not held.owner or not process_identity.has_exited(held.owner):
                raise
            holder, held_as = held.owner, held.lease_until
        upload = await self.meta.acquire_upload(
            upload_id,
            repository,
            offset,
            now,
            self.lease,
            owner,
            take_over=held_as,
            completing=completing,
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
        release = asyncio.ensure_future(self.release(upload, kept))
        self._background.add(release)
        release.add_done_callback(self._background.discard)

    async def release(self, upload: Upload, progress: Checkpoint) -> None:
        """Record progress and drop the lease; runs to the end even if the request is cancelled."""
        await asyncio.shield(
            self.meta.release_upload(
                upload.id, upload.lease_until, progress.offset, progress.state, self.clock()
            )
        )

    async def discard(self, upload_id: str) -> None:
        await self.storage.delete(upload_key(upload_id))
        await self.meta.delete_upload(upload_id)

    async def drop(self, upload_id: str) -> None:
        """Discard an upload nobody can resume, even if the request is cancelled meanwhile;
        if that fails, it is purged once it expires."""
        try:
            await asyncio.shield(self.discard(upload_id))
        except Exception as exc:
            log.warning("could not discard upload %s yet: %s", upload_id, exc)

    async def cancel(self, repository: str, upload_id: str) -> None:
        upload = await self.acquire(repository, upload_id, None)
        await self.discard(upload.id)

    async def purge_expired(self) -> int:
        """Delete uploads idle for longer than the TTL; how many were removed."""
        expired = await self.meta.expired_uploads(self.clock() - self.ttl)
        for upload in expired:
            await self.discard(upload.id)
        return len(expired)


class HeldLease:
    """The lease one request holds on an upload: renewed while the request works on it, and
    the fencing token of the checkpoints it records (one change at a time, so that a renewal
    never invalidates the token a checkpoint is being recorded with)."""

    def __init__(self, sessions: UploadSessions, upload: Upload) -> None:
        self._sessions = sessions
        self.upload = upload
        self._renew_at = time.monotonic() + sessions.lease / 3
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
            lease_until = self._sessions.clock() + self._sessions.lease
            if not await self._sessions.meta.renew_upload(
                self.upload.id, self.upload.lease_until, lease_until
            ):
                raise lost_lease()
            self.upload.lease_until = lease_until
            self._renew_at = time.monotonic() + self._sessions.lease / 3

    async def record(self, checkpoint: Checkpoint) -> None:
        """Record a durable checkpoint, keeping the lease; 416 if it was lost meanwhile."""
        async with self._changing:
            if not await self._sessions.meta.checkpoint_upload(
                self.upload.id,
                self.upload.lease_until,
                checkpoint.offset,
                checkpoint.state,
                self._sessions.clock(),
            ):
                raise lost_lease()
        self._sessions.counters.checkpoints += 1
