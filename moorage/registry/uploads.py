"""Blob upload sessions: monolithic, streamed and chunked, resumable on any process.

The upload service the API calls. Its parts:

- ``upload_sessions``: the sessions (an upload's bytes in storage under ``uploads/<id>``, its
  offset and saved hash state in the metadata store), their expiry, and the lease a request
  takes before it writes, so two requests never write one upload at once, whichever process
  or replica they reach;
- ``upload_receiving``: one request body appended to the upload's bytes;
- ``upload_checkpoints``: while a request streams, every ``checkpoint_every`` bytes of the
  upload the bytes so far are made durable in the background and then recorded with the hash
  state of exactly those bytes;
- here: the requests (PATCH, PUT, POST with ``?digest=``) and completion.

A request that fails half way, whose client hangs up, or whose process dies leaves the upload
at its newest durable checkpoint (or where the request started); the next writer discards the
bytes past it. A client hanging up is a normal event: logged in one line, counted
(``UploadCounters``), never an internal error.

**Where an upload is.** The offset is the number of bytes received; clients see it as
``Range: 0-<offset - 1>`` and ``Upload-Offset: <offset>`` (``api/v2/uploads.py`` has the
convention for an empty upload).

Completion verifies the digest, makes the bytes durable and moves them to their
content-addressed key in one atomic step before the blob is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from moorage.digest import Digest
from moorage.errors import ClientDisconnected, ErrorCode, RegistryError
from moorage.hashing import Hasher, new_hasher
from moorage.meta.errors import BlobBeingDeleted, UploadLeaseLost
from moorage.meta.protocols import BlobStore, UploadStore
from moorage.model import Upload
from moorage.registry.layout import blob_key, upload_key
from moorage.registry.upload_checkpoints import Checkpoint, Checkpoints
from moorage.registry.upload_receiving import Body, receive
from moorage.registry.upload_sessions import (
    LEASE,
    HeldLease,
    UploadCounters,
    UploadSessions,
    being_deleted,
    lost_lease,
)
from moorage.storage.base import StorageDriver

log = logging.getLogger("moorage.uploads")


class UploadingStore(BlobStore, UploadStore, Protocol):
    """What uploads keep in the metadata store: the sessions, and the blobs they become."""


#: Bytes of an upload between two checkpoints, by default.
CHECKPOINT_EVERY = 64 * 1024 * 1024


class Uploads:
    def __init__(
        self,
        storage: StorageDriver,
        meta: UploadingStore,
        *,
        ttl: float = 24 * 3600,
        lease: float = LEASE,
        checkpoint_every: int = CHECKPOINT_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.meta = meta
        #: Bytes between checkpoints while a request streams (0: none).
        self.checkpoint_every = checkpoint_every
        self.counters = UploadCounters()
        self.sessions = UploadSessions(
            storage, meta, ttl=ttl, lease=lease, clock=clock, counters=self.counters
        )

    async def start(self, repository: str) -> Upload:
        """POST: a new, empty session."""
        return await self.sessions.start(repository)

    async def status(self, repository: str, upload_id: str) -> Upload:
        return await self.sessions.status(repository, upload_id)

    async def cancel(self, repository: str, upload_id: str) -> None:
        await self.sessions.cancel(repository, upload_id)

    async def purge_expired(self) -> int:
        """Delete uploads idle for longer than the TTL; how many were removed."""
        return await self.sessions.purge_expired()

    def _checkpoints(self, lease: HeldLease) -> Checkpoints:
        upload = lease.upload
        start = Checkpoint(upload.offset, upload.hash_state)
        return Checkpoints(self.checkpoint_every, start, lease.record)

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
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> Upload:
        """PATCH: add a chunk (or a stream) at the end of the upload. ``start``: where the
        chunk starts (416 unless the upload ends there; None: wherever it ends); ``length``:
        how many bytes the body must hold (None: any number)."""
        upload = await self.sessions.acquire(repository, upload_id, start)
        lease = HeldLease(self.sessions, upload)
        checkpoints = self._checkpoints(lease)
        progress = checkpoints.kept
        try:
            offset, hasher = await receive(self.storage, lease, body, length, checkpoints)
            progress = Checkpoint(offset, hasher.state() if hasher is not None else None)
        except BaseException as exc:
            progress = checkpoints.kept
            if isinstance(exc, ClientDisconnected):
                self._client_left(upload, exc, progress)
            raise
        finally:
            await self.sessions.release(upload, progress)
        upload.offset, upload.hash_state = progress.offset, progress.state
        return upload

    async def finish(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        body: Body,
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """PUT: append the last chunk (if any), verify the digest, store the blob; its size.
        ``start`` and ``length`` as for ``append``."""
        upload = await self.sessions.acquire(repository, upload_id, start, completing=str(digest))
        return await self._complete(upload, digest, body, length, resumable=True)

    async def monolithic(
        self, repository: str, digest: Digest, body: Body, *, length: int | None = None
    ) -> int:
        """POST with ``?digest=``: the whole blob in one request (of ``length`` bytes, if
        given). The client never learns the session, so one that fails is dropped rather than
        kept for a resume."""
        upload = await self.sessions.start(repository, leased=True, digest=str(digest))
        return await self._complete(upload, digest, body, length, resumable=False)

    async def _complete(
        self,
        upload: Upload,
        digest: Digest,
        body: Body,
        length: int | None,
        *,
        resumable: bool,
    ) -> int:
        """Receive the last bytes, verify the digest, move the bytes to the blob's key and
        record the blob; its size."""
        lease = HeldLease(self.sessions, upload)
        checkpoints = self._checkpoints(lease)
        progress: Checkpoint | None = None
        try:
            offset, hasher = await receive(self.storage, lease, body, length, checkpoints)
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
                await self.sessions.release(upload, kept)
            else:
                await self.sessions.drop(upload.id)
            raise
        if actual != digest.hex:
            await self.sessions.discard(upload.id)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"uploaded content has digest {digest.algorithm}:{actual}, not {digest}",
            )
        await lease.keep()  # nobody took the upload over while it was hashed
        await self.storage.commit(upload_key(upload.id), blob_key(digest))
        # Fenced by the lease: garbage collection leaves the bytes of a digest alone while
        # an upload completing as it holds its lease (``CollectionStore``).
        try:
            await self.meta.complete_upload(
                upload.id, upload.lease_until, str(digest), offset, self.sessions.clock()
            )
        except UploadLeaseLost:
            raise lost_lease() from None
        except BlobBeingDeleted as exc:
            raise being_deleted(exc.digest) from None
        return offset

    async def _rehash(self, lease: HeldLease, algorithm: str) -> Hasher:
        hasher = new_hasher(algorithm)
        async for chunk in self.storage.read(upload_key(lease.upload.id)):
            await lease.keep()
            hasher.update(chunk)
        return hasher
