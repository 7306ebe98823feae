"""S3 driver: objects in any S3-compatible bucket, with commits that copy no bytes.

S3 has no rename: moving a 1 GiB upload to its blob key by CopyObject would write it twice.
So the bytes written through writers live in immutable *segments*, and a logical key written
by a writer is a small *descriptor* that lists them; ``commit`` writes the descriptor at the
target and never touches the bytes.

Layout, under ``prefix`` in the bucket::

    <prefix><key>                  a logical key: a plain object (written by ``put``, or a
                                   small blob compacted at commit), or a descriptor (JSON)
                                   marked by the metadata x-amz-meta-moorage-kind=composite
                                   and x-amz-meta-moorage-size=<logical size>
    <prefix>_segments/<random id>  segment objects, referenced by descriptors; keys under
                                   ``_segments/`` are refused as logical keys

Operations (``s3_descriptor.py`` has the descriptor format):

- ``stat`` is one HEAD (the size of a plain object, or the size metadata of a descriptor).
- ``read`` GETs the key; a descriptor's byte range is mapped onto its segments, read by
  ranged GETs of at most 256 MiB each, the next ones requested while the current one streams
  (up to 8 requests or 16 MiB ahead, so that many small segments do not cost a round trip
  each). From a plain-HTTP endpoint, segments are read off the socket by the event loop
  (``s3_ranges.py``); over HTTPS, through obstore.
- ``open_writer(key, offset)`` reads the descriptor and cuts it at ``offset`` (a segment
  straddling it is kept as a shorter prefix; nothing is rewritten). ``close`` appends one new
  segment (one PUT, or a multipart upload when larger than a part) and replaces the
  descriptor on the condition that nobody replaced it meanwhile (``s3_writer.py``). A
  writer's ``checkpoint`` does the same for the bytes so far and goes on in a new segment, so
  a long upload is a descriptor of one segment per checkpoint interval.
  Writers of one key may run in different processes, one after the other.
- ``commit(source, target)`` marks the source descriptor as moving to ``target``, creates
  the target descriptor with ``If-None-Match: *``, then deletes the source descriptor. If the
  target exists, the source and its segments are deleted instead. Blobs under
  ``compact_limit`` bytes are stored at the target as one plain object (one GET at read).
- ``delete`` removes the descriptor first, then its segments.
- ``list_keys`` is LIST (segments left out); ``list_objects`` adds a HEAD per object that may
  be a descriptor, for its logical size; ``sweep`` reads every descriptor (``s3_garbage.py``).

Crash safety: every object is written whole (PUT, or a completed multipart upload), a
descriptor is replaced only after the segments it names are stored, and segments are deleted
only after no descriptor names them, so a crash leaves no visible partial data and no
descriptor pointing at a missing segment. A crash inside ``commit``, after the target exists
and before the source is gone, leaves both descriptors naming the same segments; the source
then says it moved to the target, and deleting or rewriting the source spares the segments
the target names. A crash can leave garbage: segments no descriptor names and unfinished
multipart uploads, which ``sweep`` removes once old enough (``s3_garbage.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from moorage.storage import s3_garbage
from moorage.storage.base import ObjectNotFound, StorageError, StoredObject, SweepReport
from moorage.storage.s3_bucket import Bucket, Conflict, Connection, translated
from moorage.storage.s3_config import (
    MAX_AHEAD,
    READ_AHEAD,
    READ_CHUNK,
    READ_RANGE,
    SEGMENTS,
    SIGNED_RANGE_EXPIRY,
    S3Config,
    check_key,
    read_ca,
)
from moorage.storage.s3_descriptor import (
    Descriptor,
    Segment,
    composite_size,
    is_composite,
)
from moorage.storage.s3_ranges import RangeNotFound, RangeReader
from moorage.storage.s3_writer import S3Writer

if TYPE_CHECKING:
    from obstore import GetResult

log = logging.getLogger("moorage.storage.s3")


class _Span(Protocol):
    """A GET whose head has arrived; ``chunks`` streams its body."""

    def chunks(self) -> AsyncGenerator[bytes, None]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _ObstoreSpan:
    """A GET made through obstore (HTTPS endpoints, and plain objects)."""

    result: GetResult
    key: str

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        stream = self.result.stream(min_chunk_size=READ_CHUNK)
        while True:
            with translated(self.key):
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
            yield chunk

    def close(self) -> None:
        pass  # obstore drops the connection with the result


def _close_unread(task: asyncio.Task[_Span | None]) -> None:
    """Close a read-ahead nobody waits for any more (and collect its outcome)."""
    if not task.cancelled() and task.exception() is None:
        span = task.result()
        if span is not None:
            span.close()


@dataclass(frozen=True, slots=True)
class _Found:
    """A logical key as read by one GET: a descriptor, or a plain object and its bytes."""

    e_tag: str | None
    descriptor: Descriptor | None
    data: bytes

    @property
    def condition(self) -> str:
        """The ``Bucket.put`` mode that replaces this object only if nobody else did."""
        return self.e_tag or "overwrite"


class S3Driver:
    def __init__(self, config: S3Config) -> None:
        self.config = config
        prefix = config.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._bucket = Bucket(
            Connection(
                endpoint=config.endpoint,
                region=config.region,
                bucket=config.bucket,
                access_key=config.access_key,
                secret_key=config.secret_key,
                path_style=config.path_style,
                timeout=config.timeout,
                sign_payload=(
                    config.sign_payload
                    if config.sign_payload is not None
                    else not config.endpoint.startswith("https://")
                ),
                root_certificates=read_ca(config.ca_file),
            )
        )

        self._objects = s3_garbage.Objects(self._bucket, self._prefix)
        #: Segments are read straight off the socket from a plain-HTTP endpoint
        #: (``s3_ranges.py``); over HTTPS through obstore.
        self._ranges: RangeReader | None = None
        if config.endpoint.startswith("http://"):
            self._ranges = RangeReader(self._sign_range, config.timeout)

    def _sign_range(self, path: str) -> str:
        return self._bucket.sign_get(path, path, SIGNED_RANGE_EXPIRY, None)

    async def close(self) -> None:
        self._bucket.reset()

    # --- paths ------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        check_key(key)
        return self._prefix + key

    def _segment_path(self, segment_id: str) -> str:
        return f"{self._prefix}{SEGMENTS}/{segment_id}"

    def _new_segment(self) -> tuple[str, str]:
        segment_id = secrets.token_hex(16)
        return segment_id, self._segment_path(segment_id)

    # --- reading ----------------------------------------------------------------------------

    async def _load(self, key: str) -> _Found | None:
        """GET a logical key whole (descriptors and plain objects written by ``put`` are small)."""
        result = await self._bucket.get(self._path(key), key)
        if result is None:
            return None
        with translated(key):
            data = bytes(await result.bytes_async())
        descriptor = Descriptor.decode(data, key) if is_composite(result.attributes) else None
        return _Found(result.meta["e_tag"], descriptor, data)

    async def _descriptor_at(self, key: str) -> Descriptor | None:
        """The descriptor at ``key``; None if there is none (or a plain object: one HEAD)."""
        head = await self._bucket.head(self._path(key), key)
        if head is None or not is_composite(head.attributes):
            return None
        found = await self._load(key)
        return None if found is None else found.descriptor

    async def stat(self, key: str) -> int | None:
        result = await self._bucket.head(self._path(key), key)
        if result is None:
            return None
        if is_composite(result.attributes):
            return composite_size(result.attributes, key)
        return result.meta["size"]

    async def get(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        result = await self._bucket.get(path, key)
        if result is None:
            raise ObjectNotFound(key)
        if is_composite(result.attributes):
            with translated(key):
                descriptor = Descriptor.decode(bytes(await result.bytes_async()), key)
            async for chunk in self._read_composite(key, descriptor, offset, length):
                yield chunk
            return
        size = result.meta["size"]
        end = size if length is None else min(size, offset + length)
        if offset >= end:
            return
        if (offset, end) != (0, size):
            # The GET asked for the whole object; ask again for the range.
            ranged = await self._bucket.get(path, key, (offset, end))
            if ranged is None:
                raise ObjectNotFound(key)
            result = ranged
        async with contextlib.aclosing(_ObstoreSpan(result, key).chunks()) as chunks:
            async for chunk in chunks:
                yield chunk

    def _read_composite(
        self, key: str, descriptor: Descriptor, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        spans = [
            (self._segment_path(segment_id), piece, min(end, piece + READ_RANGE))
            for segment_id, start, end in descriptor.ranges(offset, length)
            for piece in range(start, end, READ_RANGE)
        ]
        return self._read_spans(key, spans)

    async def _read_spans(
        self, key: str, spans: list[tuple[str, int, int]]
    ) -> AsyncGenerator[bytes, None]:
        """Stream (path, start, end) ranges in order. While one streams, the next GETs are sent:
        at least one, and more while they add up to less than ``READ_AHEAD`` bytes (many small
        segments would otherwise cost a round trip each)."""
        ahead: deque[tuple[asyncio.Task[_Span | None], int]] = deque()
        following = 0

        def request_more() -> None:
            nonlocal following
            while following < len(spans) and (
                not ahead
                or (len(ahead) < MAX_AHEAD and sum(size for _, size in ahead) < READ_AHEAD)
            ):
                path, start, end = spans[following]
                task = asyncio.ensure_future(self._open_span(key, path, start, end))
                ahead.append((task, end - start))
                following += 1

        try:
            request_more()
            while ahead:
                task, expected = ahead.popleft()
                span = await task
                request_more()
                if span is None:
                    raise ObjectNotFound(key)
                received = 0
                async with contextlib.aclosing(span.chunks()) as chunks:
                    async for chunk in chunks:
                        received += len(chunk)
                        yield chunk
                if received != expected:
                    raise StorageError(f"{key}: a segment gave {received} of {expected} bytes")
        finally:
            for task, _ in ahead:
                task.cancel()
                task.add_done_callback(_close_unread)

    async def _open_span(self, key: str, path: str, start: int, end: int) -> _Span | None:
        """Send a ranged GET and wait for its head; None if the object is missing."""
        if self._ranges is not None:
            try:
                return await self._ranges.open(path, start, end)
            except RangeNotFound:
                return None
        result = await self._bucket.get(path, key, (start, end))
        return None if result is None else _ObstoreSpan(result, key)

    async def download_url(self, key: str, expires: float) -> str | None:
        """A presigned GET URL for the key's bytes, valid ``expires`` seconds, when the bytes
        are one whole object (a plain object, or a descriptor of one whole segment) and
        ``download_urls`` is configured; None otherwise."""
        if not self.config.download_urls:
            return None
        path = self._path(key)
        head = await self._bucket.head(path, key)
        if head is None:
            return None
        if is_composite(head.attributes):
            found = await self._load(key)
            if found is None or found.descriptor is None:
                return None
            segments = found.descriptor.segments
            if len(segments) != 1 or segments[0].length != segments[0].size:
                return None
            path = self._segment_path(segments[0].id)
        return self._bucket.sign_get(path, key, expires, self.config.public_endpoint)

    def list_keys(self, prefix: str) -> AsyncIterator[str]:
        return self._objects.keys(prefix)

    def list_objects(self, prefix: str) -> AsyncIterator[StoredObject]:
        """LIST, and a HEAD per object that may be a descriptor (``s3_garbage.py``)."""
        return self._objects.stored(prefix)

    async def sweep(self, older_than: float, *, dry_run: bool = False) -> SweepReport:
        """Segments no descriptor names and unfinished multipart uploads (``s3_garbage.py``)."""
        return await s3_garbage.sweep(self._bucket, self._prefix, older_than, dry_run)

    # --- writing ----------------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        old = await self._descriptor_at(key)
        await self._bucket.put(path, key, bytes(data))
        if old is not None:
            await self._delete_segments(key, old)

    async def open_writer(self, key: str, offset: int = 0) -> S3Writer:
        path = self._path(key)
        found = await self._load(key)
        dropped: list[str] = []
        if found is None:
            if offset:
                raise ObjectNotFound(key)
            base, condition, changed = Descriptor(), "create", True
        elif found.descriptor is not None:
            if offset > found.descriptor.size:
                raise StorageError(f"{key} is shorter than offset {offset}")
            base, dropped = found.descriptor.truncated(offset)
            if dropped and base.moved_to:
                shared = await self._shared_ids(found.descriptor)
                dropped = [segment for segment in dropped if segment not in shared]
            condition, changed = found.condition, base != found.descriptor
        else:
            # A plain object (from ``put``) continued by a writer: its head becomes a segment.
            if offset > len(found.data):
                raise StorageError(f"{key} is shorter than offset {offset}")
            base = Descriptor()
            if offset:
                segment_id, segment_path = self._new_segment()
                await self._bucket.put(segment_path, key, found.data[:offset])
                base = base.appended(Segment(segment_id, offset, offset))
            condition, changed = found.condition, True
        return S3Writer(
            self._bucket,
            key,
            path,
            base=base,
            condition=condition,
            changed=changed,
            dropped=dropped,
            new_segment=self._new_segment,
            segment_path=self._segment_path,
            part_size=self.config.part_size,
            concurrency=self.config.concurrency,
        )

    async def commit(self, source: str, target: str) -> None:
        source_path, target_path = self._path(source), self._path(target)
        found = await self._load(source)
        if found is None:
            raise ObjectNotFound(source)
        if source == target:
            return
        descriptor = found.descriptor
        if descriptor is None:
            await self._create(target, found.data)
            await self._bucket.delete([source_path], source)
            return
        if target in descriptor.moved_to and await self._references(target, descriptor):
            # An earlier commit created the target and stopped before deleting the source.
            await self._bucket.delete([source_path], source)
            return
        if descriptor.size <= self.config.compact_limit:
            data = b"".join([c async for c in self._read_composite(source, descriptor)])
            await self._create(target, data)
            await self._remove(source, descriptor)
            return
        # From here on the target may name the source's segments: say so in the source first.
        moving = descriptor.moving_to(target)
        if moving != descriptor:
            try:
                await self._bucket.put(
                    source_path,
                    source,
                    moving.encode(),
                    attributes=moving.metadata(),
                    mode=found.condition,
                )
            except Conflict:
                raise StorageError(f"{source} changed while it was being committed") from None
        committed = Descriptor(descriptor.segments)
        try:
            await self._bucket.put(
                target_path,
                target,
                committed.encode(),
                attributes=committed.metadata(),
                mode="create",
            )
        except Conflict:
            # The target exists: content-addressed keys hold the same bytes; drop the source.
            await self._remove(source, moving)
            return
        await self._bucket.delete([source_path], source)

    async def _create(self, key: str, data: bytes) -> None:
        """PUT a plain object unless the key exists."""
        with contextlib.suppress(Conflict):
            await self._bucket.put(self._path(key), key, data, mode="create")

    async def delete(self, key: str) -> bool:
        head = await self._bucket.head(self._path(key), key)
        if head is None:
            return False
        if is_composite(head.attributes):
            found = await self._load(key)
            if found is None:
                return False
            if found.descriptor is not None:
                await self._remove(key, found.descriptor)
                return True
        await self._bucket.delete([self._path(key)], key)
        return True

    async def _remove(self, key: str, descriptor: Descriptor) -> None:
        """Delete a descriptor, then the segments no other descriptor names."""
        await self._bucket.delete([self._path(key)], key)
        await self._delete_segments(key, descriptor)

    async def _delete_segments(self, key: str, descriptor: Descriptor) -> None:
        shared = await self._shared_ids(descriptor)
        doomed = [self._segment_path(i) for i in sorted(descriptor.ids - shared)]
        try:
            await self._bucket.delete(doomed, key)
        except StorageError as exc:
            log.warning("left %d unreferenced segments of %s: %s", len(doomed), key, exc)

    async def _shared_ids(self, descriptor: Descriptor) -> set[str]:
        """Segments of ``descriptor`` that a key it was committed to names."""
        shared: set[str] = set()
        for target in descriptor.moved_to:
            found = await self._load(target)
            if found is not None and found.descriptor is not None:
                shared |= found.descriptor.ids & descriptor.ids
        return shared

    async def _references(self, target: str, descriptor: Descriptor) -> bool:
        found = await self._load(target)
        return (
            found is not None
            and found.descriptor is not None
            and bool(found.descriptor.ids & descriptor.ids)
        )
