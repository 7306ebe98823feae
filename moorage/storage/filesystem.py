"""Filesystem driver: objects are files under a root directory.

Durability: ``put`` and ``commit`` fsync the file, rename it into place and fsync the directory,
so a crash leaves either the old state or the complete new object, never part of one. Writers
start background ``fdatasync`` calls while a large object streams in, so the final sync at
``commit`` has little left to flush. A writer's ``checkpoint`` is such a sync too, started once
the bytes written so far have reached the file (the first one also syncs the directory that
holds the file), while the following bytes go on being written.

Leftovers (``sweep``): a ``put`` whose process died leaves its temporary file
(``.<name>.<16 hex digits>.tmp``, beside the object it was to become; never listed, and keys
of that shape are refused), and deleted objects leave empty directories. Nothing else is
private to a writer: ``open_writer`` writes the object's own file, and ``commit`` renames it.
Empty directories are removed only when they last changed before the sweep's time, and every
write that creates a file makes its directory again if a sweep removed it meanwhile
(``_create_file``, ``_move``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator
from pathlib import Path

from moorage.storage.base import (
    Chunk,
    ObjectNotFound,
    StorageError,
    StoredObject,
    SweepReport,
    WriterBusy,
)

_BUFFER = 1024 * 1024
_SYNC_EVERY = 64 * 1024 * 1024
_READ_CHUNK = 512 * 1024
#: preadv flag: copy only what is in the page cache (Linux 4.14+); 0 where it does not exist.
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)


#: Temporary files of ``put``: ``.<name>.<16 hex digits>.tmp``.
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{16}\.tmp", re.DOTALL)
#: The kinds of leftovers ``sweep`` reports.
TEMPORARY_FILES = ("temporary file of an unfinished write", "temporary files of unfinished writes")
EMPTY_DIRECTORIES = ("empty directory", "empty directories")
#: Attempts at creating a file whose directory a sweep keeps removing.
_CREATE_ATTEMPTS = 5


def _is_temporary(name: str) -> bool:
    """A temporary file of ``put``, never an object."""
    return _TEMPORARY.fullmatch(name) is not None


def _make_directory(path: Path) -> bool:
    """Make ``path`` and its parents; False if a sweep removed it meanwhile, so the caller
    tries again. (``mkdir(exist_ok=True)`` raises FileExistsError when the directory existed
    at its ``mkdir`` and was swept before its check that it is a directory.)"""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        if path.exists():  # not a directory: no retry makes it one
            raise StorageError(f"{path} is not a directory") from None
        return False
    except NotADirectoryError:  # a file where one of its parents belongs
        raise StorageError(f"a parent of {path} is not a directory") from None
    return True


def _create_file(path: Path, flags: int) -> int:
    """``os.open`` a file to be created in a directory made first, and made again if a
    sweep removed it (then empty) between the two, or while it was being made."""
    for _ in range(_CREATE_ATTEMPTS):
        try:
            if _make_directory(path.parent):
                return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue
    raise StorageError(f"cannot create {path}: its directory keeps disappearing")


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, making the target's directory first (and again if a
    sweep removed it meanwhile); ObjectNotFound if the source is gone."""
    for _ in range(_CREATE_ATTEMPTS):
        try:
            if _make_directory(target.parent):
                os.replace(source, target)
                return
        except FileNotFoundError:
            if not source.exists():
                raise ObjectNotFound(str(source)) from None
    raise StorageError(f"cannot move {source} to {target}: its directory keeps disappearing")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileWriter:
    """Appends to a file on a thread, one batch in flight while the next one fills.

    The caller (the event loop) keeps receiving and hashing while the previous batch is copied
    into the page cache; every ``_SYNC_EVERY`` bytes a background ``fdatasync`` starts so the
    final sync at commit has little left to do.
    """

    def __init__(self, fd: int, offset: int, directory: Path) -> None:
        self._fd = fd
        self._size = offset
        self._batch: list[bytes] = []
        self._batch_size = 0
        self._in_flight: asyncio.Future[None] | None = None
        self._unsynced = 0
        self._sync: asyncio.Future[None] | None = None
        self._directory: Path | None = directory  # None once synced
        self._checkpoints: list[asyncio.Future[None]] = []
        self._finished = False  # closed or aborted: the descriptor is released

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        self._batch.append(data)
        self._batch_size += len(data)
        self._size += len(data)
        if self._batch_size >= _BUFFER:
            await self._submit()

    async def _submit(self) -> None:
        loop = asyncio.get_running_loop()
        if self._in_flight is not None:
            # Shielded: a cancelled request must not mark a write done while its thread runs.
            await asyncio.shield(self._in_flight)
            self._in_flight = None
        if self._unsynced >= _SYNC_EVERY and (self._sync is None or self._sync.done()):
            self._unsynced = 0
            self._sync = loop.run_in_executor(None, os.fdatasync, self._fd)
        if self._batch:
            batch, self._batch, self._batch_size = self._batch, [], 0
            self._unsynced += sum(len(part) for part in batch)
            self._in_flight = loop.run_in_executor(None, self._write_all, batch)

    async def checkpoint(self) -> Awaitable[None]:
        await self._submit()
        written, directory = self._in_flight, self._directory
        self._directory = None
        self._unsynced = 0
        durable = asyncio.ensure_future(self._make_durable(written, directory))
        self._checkpoints = [c for c in self._checkpoints if not c.done()]
        self._checkpoints.append(durable)
        return durable

    async def _make_durable(
        self, written: asyncio.Future[None] | None, directory: Path | None
    ) -> None:
        """Once the write holding the last byte is done, fdatasync (and the directory)."""
        if written is not None:
            await asyncio.shield(written)
        await asyncio.get_running_loop().run_in_executor(None, self._sync_data, directory)

    def _sync_data(self, directory: Path | None) -> None:
        try:
            os.fdatasync(self._fd)
            if directory is not None:
                _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"sync failed: {exc}") from exc

    def _write_all(self, batch: list[bytes]) -> None:
        if len(batch) > 256:  # stay far below IOV_MAX
            batch = [b"".join(batch)]
        views = [memoryview(part) for part in batch]
        try:
            while views:
                written = os.writev(self._fd, views)
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if views and written:
                    views[0] = views[0][written:]
        except OSError as exc:
            raise StorageError(f"write failed: {exc}") from exc

    async def _settle(self, *, failures: bool = True) -> None:
        """Wait for every write and sync under way; raise the first failure if ``failures``."""
        for future in (self._in_flight, self._sync, *self._checkpoints):
            if future is None:
                continue
            try:
                await asyncio.shield(future)
            except Exception:
                if failures:
                    raise
        self._in_flight = self._sync = None
        self._checkpoints = []

    def _release_descriptor(self) -> None:
        """Close the file now, or once the threads still using it have finished."""
        running = (self._in_flight, self._sync, *self._checkpoints)
        busy = [f for f in running if f is not None and not f.done()]
        if not busy:
            os.close(self._fd)
            return
        waiter = asyncio.gather(*busy, return_exceptions=True)
        waiter.add_done_callback(lambda _: os.close(self._fd))

    async def close(self) -> None:
        if self._finished:
            raise StorageError("writer already closed")
        self._finished = True
        try:
            await self._submit()
            await self._settle()
        finally:
            self._release_descriptor()

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            await self._settle(failures=False)
        finally:
            self._release_descriptor()


class FilesystemDriver:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._nowait = _RWF_NOWAIT != 0  # False once the filesystem refuses RWF_NOWAIT

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
            raise StorageError(f"invalid storage key {key!r}")
        if _is_temporary(parts[-1]):
            raise StorageError(f"storage key {key!r} has the shape of a temporary file")
        return self.root.joinpath(*parts)

    async def stat(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a range: what the page cache holds is read inline, the rest on a thread.

        Each chunk is first read with ``RWF_NOWAIT``, which copies only what is already in the
        page cache and never waits for the disk; whatever would wait is read on a thread, so a
        cold disk never stalls the event loop. Inline reads skip a thread hand-off per chunk,
        and at 512 KiB the read and the socket write that follows stay in the CPU cache:
        measured on loopback, this serves a cached 1 GiB blob to curl about 40% faster than
        1 MiB reads on a thread, with less CPU. Once a chunk had to come from the disk, the
        rest of the range is read ahead on a thread, one chunk in flight while the caller
        sends the one before, so the disk and the network work at the same time.
        """
        path = self._path(key)
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        loop = asyncio.get_running_loop()
        ahead: asyncio.Future[bytes] | None = None
        try:
            end = os.fstat(fd).st_size if length is None else offset + length
            position = offset
            while position < end:
                size = min(_READ_CHUNK, end - position)
                chunk = None if ahead is not None else self._read_cached(fd, size, position)
                if chunk is None:
                    if ahead is None:
                        ahead = loop.run_in_executor(None, os.pread, fd, size, position)
                    chunk, ahead = await ahead, None
                    if not chunk:
                        break  # the file is shorter than asked
                    following = position + len(chunk)
                    if following < end:
                        next_size = min(_READ_CHUNK, end - following)
                        ahead = loop.run_in_executor(None, os.pread, fd, next_size, following)
                position += len(chunk)
                yield chunk
        finally:
            if ahead is not None:
                # Never close the descriptor under a read still running on a thread.
                with contextlib.suppress(Exception):
                    await asyncio.shield(ahead)
            os.close(fd)

    def _read_cached(self, fd: int, size: int, position: int) -> Chunk | None:
        """Up to ``size`` bytes that are in the page cache, or None if reading would wait."""
        if not self._nowait:
            return None
        buffer = bytearray(size)
        try:
            count = os.preadv(fd, [buffer], position, _RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._nowait = False  # this filesystem cannot; read on threads from now on
            return None
        if count == size:
            return buffer
        return memoryview(buffer)[:count] if count else None

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    def _put(self, path: Path, data: bytes) -> None:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = _create_file(temp, os.O_WRONLY | os.O_EXCL)
        try:
            with open(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        _fsync_dir(path.parent)

    async def open_writer(self, key: str, offset: int = 0) -> FileWriter:
        """The writer holds an exclusive ``flock`` on the file until it is closed or aborted
        (the kernel drops it when the process dies): a writer whose process stalled past its
        lease can never write into bytes a later writer has taken over."""
        path = self._path(key)
        if offset == 0:
            fd = _create_file(path, os.O_WRONLY)
        else:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ObjectNotFound(key) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_size < offset:
                raise StorageError(f"{key} is shorter than offset {offset}")
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusy(key) from None
        except BaseException:
            os.close(fd)
            raise
        return FileWriter(fd, offset, path.parent)

    async def commit(self, source: str, target: str) -> None:
        await asyncio.to_thread(self._commit, self._path(source), self._path(target))

    def _commit(self, source: Path, target: Path) -> None:
        try:
            fd = os.open(source, os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFound(str(source)) from None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if target.exists():
            source.unlink()
            return
        _move(source, target)
        _fsync_dir(target.parent)

    async def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        entries = await asyncio.to_thread(self._walk, start)
        for key in entries:
            if key.startswith(prefix):
                yield key

    def _walk(self, start: Path) -> list[str]:
        return [key for key, _ in self._files(start)]

    def _files(self, start: Path) -> Iterator[tuple[str, Path]]:
        """(key, path) of the objects under ``start`` (temporary files left out)."""
        for dirpath, _dirs, files in os.walk(start):
            rel = Path(dirpath).relative_to(self.root)
            for name in files:
                if not _is_temporary(name):
                    yield (str(rel / name) if str(rel) != "." else name), Path(dirpath, name)

    async def list_objects(self, prefix: str) -> AsyncIterator[StoredObject]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        for found in await asyncio.to_thread(self._stat_all, start, prefix):
            yield found

    def _stat_all(self, start: Path, prefix: str) -> list[StoredObject]:
        found = []
        for key, path in self._files(start):
            if key.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    info = path.stat()
                    found.append(StoredObject(key, info.st_size, info.st_mtime))
        return found

    async def sweep(self, older_than: float, *, dry_run: bool = False) -> SweepReport:
        """Temporary files of ``put`` calls that never finished (their process died), and
        directories left empty, both last changed before ``older_than``: one walk of the
        tree, the leaves first."""
        found = _Sweep(self.root, older_than, dry_run)
        try:
            await asyncio.to_thread(found.directory, self.root)
        except OSError as exc:
            raise StorageError(f"sweep of {self.root} failed: {exc}") from exc
        return SweepReport.of(
            (*TEMPORARY_FILES, found.files, found.size),
            (*EMPTY_DIRECTORIES, found.directories, None),
        )

    async def download_url(self, key: str, expires: float) -> str | None:
        return None

    async def close(self) -> None:
        return None


class _Sweep:
    """One sweep's walk of the tree, and what it removed (or, for a dry run, would)."""

    def __init__(self, root: Path, older_than: float, dry_run: bool) -> None:
        self.root = root
        self.older_than = older_than
        self.dry_run = dry_run
        self.files = self.size = self.directories = 0

    def directory(self, path: Path) -> bool:
        """Sweep a directory's leftovers, then the directory if that left it empty and it
        last changed before the sweep's time (as it was before the sweep removed anything:
        a directory just made for a new file is young). True if it is gone (or would be)."""
        try:
            old = os.stat(path).st_mtime < self.older_than
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return True  # removed meanwhile
        kept = 0
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                kept += not self.directory(Path(entry.path))
            elif not (_is_temporary(entry.name) and self._temporary(entry)):
                kept += 1
        if kept or not old or path == self.root:
            return False
        if not self.dry_run:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False  # a writer has just made a file in it
                raise StorageError(f"cannot remove {path}: {exc}") from exc
        self.directories += 1
        return True

    def _temporary(self, entry: os.DirEntry[str]) -> bool:
        """Remove an old temporary file; True if it is gone (or would be)."""
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= self.older_than:
                return False
            if not self.dry_run:
                os.unlink(entry.path)
        except FileNotFoundError:
            return True  # removed, or renamed into place (then its directory stays)
        self.files += 1
        self.size += info.st_size
        return True
