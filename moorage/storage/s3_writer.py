"""The S3 driver's writer: each writer session stores new segments, then the descriptor.

Bytes are batched into writes of about 1 MiB and handed to obstore's buffered writer, which
sends one PUT if the segment stays under the part size and otherwise a multipart upload with
a bounded number of parts in flight, so memory stays at about ``(concurrency + 1) * part``.

``close`` completes the segment, then replaces the descriptor under the condition that it is
still the one the writer started from (``If-Match`` its ETag, or ``If-None-Match: *`` for a new
key), then deletes the segments the writer cut off. A crash at any point leaves the old
descriptor or the new one, never one that names a missing segment: at worst a segment (or an
unfinished multipart upload) nobody references.

``checkpoint`` does the same in the background for the bytes written so far: the current
segment is completed and appended to the descriptor (``If-Match`` the ETag the previous
descriptor write returned), while the following bytes go into a new segment. Descriptor
writes are chained, each after the one before, so they apply in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moorage.storage.base import StorageError
from moorage.storage.s3_bucket import Bucket, Conflict, translated
from moorage.storage.s3_descriptor import Descriptor, Segment

if TYPE_CHECKING:
    from obstore import AsyncWritableFile

log = logging.getLogger("moorage.storage.s3")

#: Writes are joined into batches of this size before they cross into obstore: each call
#: there costs tens of microseconds, while request bodies arrive in 16-256 KiB chunks.
BATCH = 1 << 20
SEGMENT_ATTRIBUTES = {"Content-Type": "application/octet-stream"}


@dataclass(slots=True)
class _OpenSegment:
    """A segment being written: its id, object path, obstore writer and byte count."""

    id: str
    path: str
    file: AsyncWritableFile
    written: int = 0

    async def abort(self) -> None:
        """Abort its multipart upload (bytes still in obstore's buffer were never sent)."""
        with contextlib.suppress(Exception):
            await self.file.__aexit__(StorageError, StorageError("aborted"), None)


class S3Writer:
    def __init__(
        self,
        bucket: Bucket,
        key: str,
        path: str,
        *,
        base: Descriptor,
        condition: str,
        changed: bool,
        dropped: Sequence[str],
        new_segment: Callable[[], tuple[str, str]],
        segment_path: Callable[[str], str],
        part_size: int,
        concurrency: int,
    ) -> None:
        self._bucket = bucket
        self._key = key
        self._path = path
        #: The descriptor as last stored (or, while ``_changed``, as it is to be stored).
        self._base = base
        self._condition = condition
        self._changed = changed
        self._dropped = list(dropped)
        self._new_segment = new_segment
        self._segment_path = segment_path
        self._part_size = part_size
        self._concurrency = concurrency
        self._size = base.size
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._segment: _OpenSegment | None = None
        #: The last descriptor write started (by a checkpoint or close); each waits for the one
        #: before it.
        self._storing: asyncio.Future[None] | None = None
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError(f"{self._key}: write after close")
        if not data:
            return
        # bytes() keeps a bytes object as it is, and copies a buffer the caller might reuse.
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        self._size += len(data)
        if self._pending_size >= BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if self._segment is None:
            segment_id, segment_path = self._new_segment()
            file = self._bucket.open_writer(
                segment_path,
                self._key,
                self._part_size,
                self._concurrency,
                SEGMENT_ATTRIBUTES,
            )
            self._segment = _OpenSegment(segment_id, segment_path, file)
        with translated(self._key):
            await self._segment.file.write(batch)
        self._segment.written += len(batch)

    async def _hand_over(self) -> asyncio.Future[None]:
        """Send what is buffered, then store the current segment and the descriptor naming it
        in the background, after the descriptor writes already under way."""
        try:
            await self._flush()
        except BaseException:
            await self._abort_segment()
            raise
        segment, self._segment = self._segment, None
        self._storing = asyncio.ensure_future(self._store(self._storing, segment))
        return self._storing

    async def checkpoint(self) -> Awaitable[None]:
        if self._done:
            raise StorageError(f"{self._key}: checkpoint after close")
        return await self._hand_over()

    async def close(self) -> None:
        """Store the segment, then the descriptor that appends it; see the module docstring."""
        if self._done:
            raise StorageError(f"{self._key}: writer already closed")
        self._done = True
        await (await self._hand_over())

    async def _store(
        self, previous: asyncio.Future[None] | None, segment: _OpenSegment | None
    ) -> None:
        try:
            if previous is not None:
                await asyncio.shield(previous)
            if segment is not None:
                with translated(self._key):
                    await segment.file.close()
        except BaseException:
            if segment is not None:
                await segment.abort()
            raise
        descriptor = self._base
        if segment is not None:
            descriptor = descriptor.appended(Segment(segment.id, segment.written, segment.written))
        elif not self._changed:
            return
        try:
            e_tag = await self._bucket.put(
                self._path,
                self._key,
                descriptor.encode(),
                attributes=descriptor.metadata(),
                mode=self._condition,
            )
        except Conflict:
            # Another writer replaced the descriptor: ours was not written, drop the segment.
            await self._delete_quietly([segment.path] if segment else [])
            raise StorageError(f"{self._key} was changed by another writer") from None
        # Whether a failed PUT took effect is unknown, so its segment is left in place.
        self._base, self._condition, self._changed = descriptor, e_tag or "overwrite", False
        dropped, self._dropped = self._dropped, []
        await self._delete_quietly([self._segment_path(segment) for segment in dropped])

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._pending.clear()
        await self._abort_segment()
        if self._storing is not None:
            # A checkpoint under way completes (or fails) first: what it stores is kept.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._storing)

    async def _abort_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            await segment.abort()

    async def _delete_quietly(self, paths: list[str]) -> None:
        if not paths:
            return
        try:
            await self._bucket.delete(paths, self._key)
        except StorageError as exc:
            log.warning("left %d unreferenced segments of %s: %s", len(paths), self._key, exc)
