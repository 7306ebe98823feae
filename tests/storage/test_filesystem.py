"""Filesystem-specific guarantees: keys cannot escape the root, nothing half-written is visible,
and reads serve the page cache inline and the disk from a thread."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from moorage.storage.base import StorageError
from moorage.storage.filesystem import FilesystemDriver


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a//b", "", "a/./b", "a\x00b"])
async def test_keys_cannot_escape_root(tmp_path: Path, key: str) -> None:
    driver = FilesystemDriver(tmp_path / "root")
    with pytest.raises(StorageError):
        await driver.put(key, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


async def test_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("dir/key", b"data")
    assert os.listdir(tmp_path / "dir") == ["key"]


async def test_uncommitted_upload_is_not_at_the_blob_key(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    writer = await driver.open_writer("uploads/u", 0)
    await writer.write(b"partial")
    await writer.abort()
    assert await driver.stat("blobs/target") is None
    assert not (tmp_path / "blobs").exists()


async def _stored(tmp_path: Path, size: int) -> tuple[FilesystemDriver, bytes]:
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(size)
    await driver.put("blobs/b", data)
    return driver, data


def _drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_reads_what_is_not_cached_on_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, data = await _stored(tmp_path, 3 * 1024 * 1024 + 5)
    threaded: list[int] = []
    pread = os.pread

    def counting_pread(fd: int, size: int, position: int) -> bytes:
        threaded.append(size)
        return pread(fd, size, position)

    monkeypatch.setattr(os, "pread", counting_pread)
    assert b"".join([c async for c in driver.read("blobs/b")]) == data
    assert threaded == []  # just written: all of it in the page cache, read inline
    _drop_from_page_cache(tmp_path / "blobs" / "b")
    assert (
        b"".join([c async for c in driver.read("blobs/b", 7, 2 * 1024 * 1024)])
        == data[7 : 7 + 2 * 1024 * 1024]
    )
    assert threaded  # evicted: the reads that would wait went to a thread


async def test_a_filesystem_without_rwf_nowait_reads_on_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, data = await _stored(tmp_path, 1024 * 1024 + 3)

    def refuse(*_: object) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "preadv", refuse)
    assert b"".join([c async for c in driver.read("blobs/b", 1)]) == data[1:]
    assert b"".join([c async for c in driver.read("blobs/b")]) == data


async def test_chunks_are_never_reused(tmp_path: Path) -> None:
    driver, data = await _stored(tmp_path, 2 * 1024 * 1024 + 11)
    chunks = [c async for c in driver.read("blobs/b", 3)]
    assert len(chunks) > 2
    assert b"".join(chunks) == data[3:]  # still intact after the whole read
