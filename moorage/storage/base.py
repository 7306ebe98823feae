"""The storage driver protocol.

A driver stores opaque objects under ``/``-separated keys. The registry decides the key layout
(``moorage.registry.layout``); drivers never interpret keys. The contract every driver keeps,
and that ``tests/storage`` checks for each of them:

- ``put`` and ``commit`` are atomic: readers see the whole new object or nothing.
- an object written through ``open_writer`` is private until ``commit`` moves it to its final
  key; ``commit`` makes it durable first.
- ``open_writer(key, offset)`` continues an object at ``offset``, discarding anything stored
  beyond it (left behind by a write that failed half way, or by a process that died).
- a writer's ``checkpoint`` makes what it has written so far durable while it goes on
  writing, so that a process that dies mid-write leaves a prefix that can be continued.
- two writers of one key never mix their bytes: while one is open (neither closed nor
  aborted), ``open_writer`` of the same key raises ``WriterBusy`` (filesystem: a lock the
  kernel drops when the process dies; memory), or the later of two writers to store fails
  (S3: descriptors are replaced ``If-Match``, segments never change).
- ``list_objects`` lists what ``list_keys`` does, with each object's size and age; ``sweep``
  removes the driver's own leftovers older than the time it is given (what crashed writers
  left), never anything an object uses, and a dry run reports the same without removing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol

from moorage.errors import StoredDataMissing, Unavailable
from moorage.sizes import human_size


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as a listing finds it."""

    key: str
    #: The object's size, as ``stat`` gives it (for an S3 object made of segments, the
    #: logical size its descriptor records, not the descriptor's own).
    size: int
    #: Unix time of its last write (filesystem mtime, S3 LastModified of the object or of
    #: its descriptor).
    modified: float


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a driver's sweep of its own leftovers removed (or, for a dry run, would)."""

    items: int = 0
    bytes: int = 0
    #: One short line per kind of leftover, for people ("3 unreferenced segments, 12.0 MiB").
    lines: tuple[str, ...] = ()

    @classmethod
    def of(cls, *kinds: tuple[str, str, int, int | None]) -> SweepReport:
        """A report of ``(one, many, count, bytes)`` per kind of leftover: its name in the
        singular and the plural, how many, and their bytes (None where bytes do not count,
        as for directories). Kinds with none are left out."""
        found = [kind for kind in kinds if kind[2]]
        return cls(
            sum(count for _, _, count, _ in found),
            sum(size or 0 for _, _, _, size in found),
            tuple(
                f"{count} {one if count == 1 else many}"
                + ("" if size is None else f", {human_size(size)}")
                for one, many, count, size in found
            ),
        )


class StorageError(Unavailable):
    """A driver could not complete an operation (I/O error, backend unavailable)."""

    service = "storage"


class ObjectNotFound(StorageError, StoredDataMissing):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class WriterBusy(StorageError):
    """Another writer of the object is still open, in a process that still runs."""

    def __init__(self, key: str) -> None:
        super().__init__(f"another writer still has {key} open")
        self.key = key


class Writer(Protocol):
    """Appends to an object opened by :meth:`StorageDriver.open_writer`."""

    @property
    def size(self) -> int: ...

    async def write(self, data: bytes) -> None: ...

    async def checkpoint(self) -> Awaitable[None]:
        """Start making the bytes written so far durable, without waiting for them.

        Returns once the writer has taken note of the current ``size`` (at worst after the
        wait a ``write`` may have), with an awaitable that completes when every byte up to
        that size is durable and would be kept by ``open_writer(key, size)`` in any process,
        even if this one died before ``close``; it raises if they could not be made so.
        Writes may go on meanwhile. ``close`` and ``abort`` wait for the checkpoints still
        under way; after ``abort`` the bytes up to a checkpoint that completed are kept.
        """

    async def close(self) -> None:
        """Flush buffered bytes so that another process can continue the object."""

    async def abort(self) -> None:
        """Release resources after a failed write; the stored size is then undefined."""


#: Bytes streamed by ``StorageDriver.read`` (a driver may fill a buffer rather than copy it).
Chunk = bytes | bytearray | memoryview


class StorageDriver(Protocol):
    async def stat(self, key: str) -> int | None:
        """Size of the object, or None if there is none."""

    async def get(self, key: str) -> bytes:
        """The whole object (for small objects); raises ObjectNotFound."""

    def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream ``length`` bytes (or to the end) from ``offset``; raises ObjectNotFound.
        Each chunk is the caller's: a driver never writes into one it has handed out."""

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object atomically and durably."""

    async def open_writer(self, key: str, offset: int = 0) -> Writer:
        """Open ``key`` for writing at ``offset`` (0 creates or truncates it); WriterBusy if
        a writer of ``key`` is still open (where the driver can tell)."""

    async def commit(self, source: str, target: str) -> None:
        """Make ``source`` durable and move it to ``target`` atomically.

        If ``target`` already exists, ``source`` is removed instead (content-addressed keys hold
        the same bytes).
        """

    async def delete(self, key: str) -> bool:
        """Remove an object; True if it existed."""

    def list_keys(self, prefix: str) -> AsyncIterator[str]:
        """Every key that starts with ``prefix``, in no particular order."""

    def list_objects(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Every object whose key starts with ``prefix``, with its size and when it was last
        written, in no particular order: what ``list_keys`` lists (never a writer's private
        files, nor S3 segments). Objects deleted while the listing runs may be left out."""

    async def sweep(self, older_than: float, *, dry_run: bool = False) -> SweepReport:
        """Remove (or, for a dry run, only count: the report is the same) the driver's own
        leftovers last written before the Unix time ``older_than``: what crashed writers and
        commits left behind (filesystem: temporary files and empty directories; S3: segments
        no descriptor names, unfinished multipart uploads; memory: nothing). Never anything
        an object still uses, nor anything last written at or after ``older_than``: a writer
        at work loses nothing, as long as ``older_than`` lies further back than a writer
        takes to name the bytes it stores (S3: to complete a segment and write the
        descriptor)."""

    async def download_url(self, key: str, expires: float) -> str | None:
        """A URL clients can fetch the object from directly for ``expires`` seconds, or None
        (the registry then streams the object itself)."""

    async def close(self) -> None:
        """Release clients and connections."""
