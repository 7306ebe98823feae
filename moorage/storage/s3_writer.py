"""The S3 driver's writer: one writer session stores one new segment, then the descriptor.

Bytes are batched into writes of about 1 MiB and handed to obstore's buffered writer, which
sends one PUT if the session stays under the part size and otherwise a multipart upload with
a bounded number of parts in flight, so memory stays at about ``(concurrency + 1) * part``.

``close`` completes the segment, then replaces the descriptor under the condition that it is
still the one the writer started from (``If-Match`` its ETag, or ``If-None-Match: *`` for a new
key), then deletes the segments the writer cut off. A crash at any point leaves the old
descriptor or the new one, never one that names a missing segment: at worst a segment (or an
unfinished multipart upload) nobody references.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
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
        self._base = base
        self._condition = condition
        self._changed = changed
        self._dropped = list(dropped)
        self._new_segment = new_segment
        self._segment_path = segment_path
        self._part_size = part_size
        self._concurrency = concurrency
        self._size = base.size
        self._written = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._segment: tuple[str, str] | None = None  # (id, path)
        self._file: AsyncWritableFile | None = None
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
        if self._file is None:
            self._segment = self._new_segment()
            self._file = self._bucket.open_writer(
                self._segment[1],
                self._key,
                self._part_size,
                self._concurrency,
                SEGMENT_ATTRIBUTES,
            )
        with translated(self._key):
            await self._file.write(batch)
        self._written += len(batch)

    async def close(self) -> None:
        """Store the segment, then the descriptor that appends it; see the module docstring."""
        if self._done:
            raise StorageError(f"{self._key}: writer already closed")
        self._done = True
        descriptor = self._base
        try:
            await self._flush()
            if self._file is not None:
                with translated(self._key):
                    await self._file.close()
        except BaseException:
            await self._abort_segment()
            raise
        if self._segment is not None:
            descriptor = descriptor.appended(
                Segment(self._segment[0], self._written, self._written)
            )
        elif not self._changed:
            return
        try:
            await self._bucket.put(
                self._path,
                self._key,
                descriptor.encode(),
                attributes=descriptor.metadata(),
                mode=self._condition,
            )
        except Conflict:
            # Another writer replaced the descriptor: ours was not written, drop the segment.
            await self._delete_quietly([self._segment[1]] if self._segment else [])
            raise StorageError(f"{self._key} was changed by another writer") from None
        # Whether a failed PUT took effect is unknown, so its segment is left in place.
        await self._delete_quietly([self._segment_path(segment) for segment in self._dropped])

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._pending.clear()
        await self._abort_segment()

    async def _abort_segment(self) -> None:
        """Abort the multipart upload (a segment still in the buffer was never sent)."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):
                await file.__aexit__(StorageError, StorageError("aborted"), None)

    async def _delete_quietly(self, paths: list[str]) -> None:
        try:
            await self._bucket.delete(paths, self._key)
        except StorageError as exc:
            log.warning("left %d unreferenced segments of %s: %s", len(paths), self._key, exc)
