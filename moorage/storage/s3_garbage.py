"""What garbage collection asks of the S3 driver: objects listed with their size and age, and
the driver's own leftovers swept away.

**Listing.** LIST gives each object's size, LastModified and ETag, but none of its metadata,
so it cannot tell a descriptor (whose logical size is in its metadata) from a plain object.
``list_keys`` needs LIST only. ``list_objects`` adds one HEAD per object that may be a
descriptor, that is every object of at least ``MIN_DESCRIPTOR`` (36) bytes, ``AT_ONCE`` at a
time while the LIST pages arrive: for a registry, a request per blob and per upload besides
LIST's one per 1000 objects. On SeaweedFS on one machine, 2000 blobs (half of them
descriptors) took 0.07 s to list by key and 1.0 s with sizes; a sweep, 1.5 s.

**Segments no descriptor names.** A crash leaves them: a writer that stored its segment and
died before a descriptor named it, a ``put``, ``delete`` or truncating writer that died
between its steps or failed to delete. The sweep lists the segments last written before
``older_than`` (a younger one may belong to a writer about to name it: segments are stored
before a descriptor names them, so age is what protects them; some stores date an object
made by a multipart upload from the upload's start, so ``older_than`` must be further back
than a writer takes over one segment, a checkpoint interval at its client's pace: garbage
collection's grace period, an hour by default, is), then reads every logical
object that may be a descriptor (one GET each, of the whole object, up to ``READ_WHOLE``
bytes: a descriptor of about a thousand segments; a HEAD first above that, and a GET if it
is a descriptor) and keeps every segment a descriptor names, including the segments of the
keys a descriptor says it is moving to.

Listing and reading are not one snapshot. ``commit`` moves a descriptor's segments to another
key: it marks the source as moving, creates the target, then deletes the source. A pass that
listed (or read) the target's part of the bucket before the target existed and the source's
after it was deleted sees neither. So the sweep reads in passes, each listing anew, and
deletes only the segments that no pass found named: at least two (a commit that straddles
the first pass is over before the second one lists), and more while the last one still found
some of them named (something moved meanwhile), up to ``MAX_PASSES`` (if the last one
still does, it deletes none). A further pass reads only what changed: a listed version read
before (same key and ETag) is not read again, at the cost of remembering the segment ids of
every descriptor during the sweep. This is sound as long as a segment moves at most once
while two passes run: the registry moves each one once, from its upload to its blob.

**Unfinished multipart uploads** of segments, started before ``older_than``: listed with
ListMultipartUploads, sized with ListParts and aborted (``s3_multipart.py``). A writer
still sending the parts of a segment it began before ``older_than`` then fails, and its
request with it; what it had checkpointed is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from moorage.storage.base import StoredObject, SweepReport
from moorage.storage.s3_bucket import Bucket, Listed, translated
from moorage.storage.s3_config import SEGMENTS
from moorage.storage.s3_descriptor import Descriptor, composite_size, is_composite
from moorage.storage.s3_multipart import Multipart, NotSupported, Unfinished

log = logging.getLogger("moorage.storage.s3")

#: The smallest descriptor (no segment) is this long: smaller objects are plain.
MIN_DESCRIPTOR = len(Descriptor().encode())
#: Objects up to this size are read whole by the sweep (any descriptor but a huge one).
READ_WHOLE = 64 * 1024
#: Requests sent at once while listing objects or reading descriptors.
AT_ONCE = 32
#: The sweep's passes over the descriptors: at least two, at most this many.
MAX_PASSES = 5
#: The kinds of leftovers ``sweep`` reports.
UNREFERENCED_SEGMENTS = ("unreferenced segment", "unreferenced segments")
UNFINISHED_UPLOADS = ("unfinished multipart upload", "unfinished multipart uploads")

_T = TypeVar("_T")
_R = TypeVar("_R")


async def _each(items: Iterable[_T], call: Callable[[_T], Awaitable[_R]]) -> list[_R]:
    """``call`` on every item, ``AT_ONCE`` at a time; the results in order."""
    limit = asyncio.Semaphore(AT_ONCE)

    async def one(item: _T) -> _R:
        async with limit:
            return await call(item)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in items]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first failure, as a caller would meet it
    return [task.result() for task in tasks]


@dataclass(frozen=True, slots=True)
class _Read:
    """A logical object as one read found it."""

    e_tag: str | None
    descriptor: Descriptor | None  # None: a plain object


class Objects:
    """The logical objects under the driver's prefix (``root``)."""

    def __init__(self, bucket: Bucket, root: str) -> None:
        self.bucket = bucket
        self.root = root

    def _key(self, path: str) -> str:
        return path[len(self.root) :]

    async def pages(self, prefix: str) -> AsyncIterator[list[tuple[str, Listed]]]:
        """LIST pages of the logical objects whose key starts with ``prefix``, as (key, what
        LIST says); the segments are never listed."""
        if prefix.startswith(f"{SEGMENTS}/"):
            return
        if "/" in prefix:
            directories = [self.root + prefix.rsplit("/", 1)[0]]
        else:
            # One level first, so that listing every key does not list every segment too.
            subdirectories, objects = await self.bucket.top(self.root.rstrip("/"), prefix)
            page = [(self._key(o.path), o) for o in objects]
            if page := [(key, o) for key, o in page if key.startswith(prefix)]:
                yield page
            directories = [
                path
                for path in subdirectories
                if self._key(path) != SEGMENTS and self._key(path).startswith(prefix)
            ]
        for directory in directories:
            async for listed in self.bucket.pages(directory, prefix):
                page = [(self._key(o.path), o) for o in listed]
                if page := [(key, o) for key, o in page if key.startswith(prefix)]:
                    yield page

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        async for page in self.pages(prefix):
            for key, _ in page:
                yield key

    async def stored(self, prefix: str) -> AsyncIterator[StoredObject]:
        """The objects with their logical sizes: see the module's docstring for the cost."""
        async for page in self.pages(prefix):
            for found in await _each(page, self._stored):
                if found is not None:
                    yield found

    async def _stored(self, item: tuple[str, Listed]) -> StoredObject | None:
        key, listed = item
        if listed.size < MIN_DESCRIPTOR:
            return StoredObject(key, listed.size, listed.modified)
        head = await self.bucket.head(listed.path, key)
        if head is None:
            return None  # deleted meanwhile
        size = (
            composite_size(head.attributes, key)
            if is_composite(head.attributes)
            else head.meta["size"]
        )
        return StoredObject(key, size, head.meta["last_modified"].timestamp())

    async def read(self, key: str, size: int) -> _Read | None:
        """What is at ``key`` now (``size``: as listed, 0 if not known); None if nothing."""
        path = self.root + key
        if size > READ_WHOLE:
            head = await self.bucket.head(path, key)
            if head is None:
                return None
            if not is_composite(head.attributes):
                return _Read(head.meta["e_tag"], None)
        result = await self.bucket.get(path, key)
        if result is None:
            return None
        with translated(key):
            data = bytes(await result.bytes_async())
        composite = is_composite(result.attributes)
        return _Read(result.meta["e_tag"], Descriptor.decode(data, key) if composite else None)


class _Passes:
    """Passes over the descriptors; what each pass read is remembered by key and ETag."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        #: (key, ETag) of a version read -> the segments it names, and the keys it is moving to.
        self.known: dict[tuple[str, str], tuple[frozenset[str], tuple[str, ...]]] = {}

    async def named(self) -> set[str]:
        """The segments that the descriptors listed now name (and the keys they move to)."""
        named: set[str] = set()
        moving: set[str] = set()
        async for page in self.objects.pages(""):
            unread: list[tuple[str, Listed]] = []
            for key, listed in page:
                known = self.known.get((key, listed.e_tag)) if listed.e_tag else None
                if known is not None:
                    named |= known[0]
                    moving.update(known[1])
                elif listed.size >= MIN_DESCRIPTOR:
                    unread.append((key, listed))
            reads = await _each(unread, lambda item: self.objects.read(item[0], item[1].size))
            for (key, _), found in zip(unread, reads, strict=True):
                descriptor = None if found is None else found.descriptor
                ids = frozenset() if descriptor is None else descriptor.ids
                targets = () if descriptor is None else descriptor.moved_to
                if found is not None and found.e_tag:
                    self.known[key, found.e_tag] = (ids, targets)
                named |= ids
                moving.update(targets)
        # A source cut after its commit spares the segments its targets name: read them too.
        for found in await _each(sorted(moving), lambda key: self.objects.read(key, 0)):
            if found is not None and found.descriptor is not None:
                named |= found.descriptor.ids
        return named


async def unnamed_segments(objects: Objects, candidates: set[str]) -> set[str]:
    """Those of ``candidates`` (segment ids) that no pass over the descriptors found named."""
    passes = _Passes(objects)
    unnamed = set(candidates)
    for number in range(1, MAX_PASSES + 1):
        if not unnamed:
            break
        before = len(unnamed)
        unnamed -= await passes.named()
        if number >= 2 and len(unnamed) == before:
            return unnamed
    if unnamed:
        log.warning(
            "kept %d segments that no descriptor seems to name: descriptors kept naming more "
            "of them in each of %d passes (segments moving between keys); the next sweep "
            "looks again",
            len(unnamed),
            MAX_PASSES,
        )
    return set()


async def sweep(bucket: Bucket, root: str, older_than: float, dry_run: bool) -> SweepReport:
    """Delete (unless ``dry_run``) the segments last written before ``older_than`` that no
    descriptor names, and abort the multipart uploads of segments started before it."""
    old: dict[str, int] = {}
    async for page in bucket.pages(f"{root}{SEGMENTS}", SEGMENTS):
        for listed in page:
            if listed.modified < older_than:
                old[listed.path.rsplit("/", 1)[-1]] = listed.size
    unnamed = await unnamed_segments(Objects(bucket, root), set(old)) if old else set()
    if unnamed and not dry_run:
        await bucket.delete([f"{root}{SEGMENTS}/{i}" for i in sorted(unnamed)], SEGMENTS)
    uploads, parts = await _unfinished_uploads(bucket, f"{root}{SEGMENTS}/", older_than, dry_run)
    return SweepReport.of(
        (*UNREFERENCED_SEGMENTS, len(unnamed), sum(old[i] for i in unnamed)),
        (*UNFINISHED_UPLOADS, uploads, parts),
    )


async def _unfinished_uploads(
    bucket: Bucket, prefix: str, older_than: float, dry_run: bool
) -> tuple[int, int]:
    """Abort (unless ``dry_run``) the multipart uploads under ``prefix`` started before
    ``older_than``; how many there were, and the bytes of their parts."""
    async with Multipart(bucket.connection) as multipart:
        try:
            found = await multipart.unfinished(prefix)
        except NotSupported as exc:
            log.warning("unfinished multipart uploads cannot be swept: %s", exc)
            return 0, 0

        async def drop(upload: Unfinished) -> int | None:
            size = await multipart.size(upload)
            if size is None or dry_run:
                return size
            return size if await multipart.abort(upload) else None

        sizes = await _each([u for u in found if u.initiated < older_than], drop)
    dropped = [size for size in sizes if size is not None]
    return len(dropped), sum(dropped)
