"""Filesystem-specific guarantees: keys cannot escape the root, nothing half-written is visible,
reads serve the page cache inline and the disk from a thread, and the sweep takes what crashed
writes and deletes leave (temporary files, empty directories) and nothing a writer needs."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moorage.storage.base import ObjectNotFound, StorageError, SweepReport
from moorage.storage.filesystem import EMPTY_DIRECTORIES, TEMPORARY_FILES, FilesystemDriver


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


# -- what garbage collection needs: the sweep of leftovers ------------------------------------

HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look last changed ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


async def test_a_crashed_put_leaves_a_temporary_file_the_sweep_takes(tmp_path: Path) -> None:
    """A process killed between writing a put's temporary file and renaming it."""
    root = tmp_path / "root"
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from moorage.storage.filesystem import FilesystemDriver

        def die(*_):
            os._exit(3)

        os.replace = die
        asyncio.run(FilesystemDriver({str(root)!r}).put("blobs/sha256/aa/b", b"x" * 1000))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr.decode()
    (temporary,) = (root / "blobs" / "sha256" / "aa").iterdir()
    assert temporary.name.startswith(".b.") and temporary.name.endswith(".tmp")
    driver = FilesystemDriver(root)
    await driver.put("blobs/sha256/aa/c", b"kept")
    assert [k async for k in driver.list_keys("")] == ["blobs/sha256/aa/c"]
    assert [o.key async for o in driver.list_objects("blobs/")] == ["blobs/sha256/aa/c"]

    # Young: kept. Old: taken, and nothing else.
    assert await driver.sweep(time.time() - HOUR) == SweepReport()
    _age(temporary, 2 * HOUR)
    taken = SweepReport.of((*TEMPORARY_FILES, 1, 1000))
    assert await driver.sweep(time.time() - HOUR, dry_run=True) == taken
    assert temporary.exists()
    assert await driver.sweep(time.time() - HOUR) == taken
    assert not temporary.exists()
    assert await driver.get("blobs/sha256/aa/c") == b"kept"
    assert taken.lines == ("1 temporary file of an unfinished write, 1000 B",)


async def test_a_young_temporary_file_beside_an_old_one_stays(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put("d/key", b"data")
    old = tmp_path / "d" / ".key.00112233445566aa.tmp"
    young = tmp_path / "d" / ".key.ffeeddccbbaa9988.tmp"
    old.write_bytes(b"12345")
    young.write_bytes(b"123")
    _age(old, 2 * HOUR)
    assert await driver.sweep(time.time() - HOUR) == SweepReport.of((*TEMPORARY_FILES, 1, 5))
    assert sorted(os.listdir(tmp_path / "d")) == [young.name, "key"]


async def test_keys_shaped_like_temporary_files_are_refused(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    for key in (".a.0123456789abcdef.tmp", "dir/.b.0123456789abcdef.tmp"):
        with pytest.raises(StorageError, match="shape of a temporary file"):
            await driver.put(key, b"x")
    # Other names with dots are objects like any other, listed and never swept.
    await driver.put("dir/.hidden.tmp", b"x")
    await driver.put(".a.0123456789abcdef.tmp/c", b"y")
    assert sorted([k async for k in driver.list_keys("")]) == [
        ".a.0123456789abcdef.tmp/c",
        "dir/.hidden.tmp",
    ]
    assert await driver.sweep(time.time() + HOUR) == SweepReport()


async def test_empty_directories_go_the_leaves_first(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    for key in ("blobs/sha256/aa/1", "blobs/sha256/ab/2", "blobs/sha256/ac/3", "uploads/u"):
        await driver.put(key, b"x")
    for key in ("blobs/sha256/aa/1", "blobs/sha256/ab/2", "uploads/u"):
        await driver.delete(key)
    for directory in ("blobs/sha256/aa", "blobs/sha256/ab", "blobs/sha256", "blobs", "uploads"):
        _age(tmp_path / directory, 2 * HOUR)
    _age(tmp_path / "blobs/sha256/ab", 60)  # emptied a minute ago: young
    report = await driver.sweep(time.time() - HOUR)
    assert report == SweepReport.of((*EMPTY_DIRECTORIES, 2, None))
    assert report.lines == ("2 empty directories",)
    assert sorted(os.listdir(tmp_path)) == ["blobs"]
    assert sorted(os.listdir(tmp_path / "blobs/sha256")) == ["ab", "ac"]

    # A directory emptied by the sweep itself goes with its last subdirectory, when it was
    # old before the sweep; the root never goes.
    await driver.delete("blobs/sha256/ac/3")
    for directory in ("blobs/sha256/ab", "blobs/sha256/ac", "blobs/sha256", "blobs"):
        _age(tmp_path / directory, 2 * HOUR)
    four = SweepReport.of((*EMPTY_DIRECTORIES, 4, None))
    assert await driver.sweep(time.time() - HOUR, dry_run=True) == four
    assert await driver.sweep(time.time() - HOUR) == four
    assert os.listdir(tmp_path) == []
    assert await driver.sweep(time.time() + HOUR) == SweepReport()


async def test_writes_make_again_a_directory_swept_under_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep removes an empty directory between a writer's mkdir and its file's creation
    (or rename): the writer makes the directory again."""
    driver = FilesystemDriver(tmp_path / "root")
    root = driver.root
    real_open, real_replace = os.open, os.replace
    swept: list[str] = []

    def sweep_first(path: str | os.PathLike[str]) -> None:
        """Remove the file's directory, the first time, if it is one of the test's."""
        directory = Path(path).parent
        if directory.name == "empty" and str(directory) not in swept:
            directory.rmdir()
            swept.append(str(directory))

    def open_after_sweep(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if flags & os.O_CREAT:
            sweep_first(path)
        return real_open(path, flags, *args)

    def replace_after_sweep(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        sweep_first(target)
        real_replace(source, target)

    monkeypatch.setattr(os, "open", open_after_sweep)
    monkeypatch.setattr(os, "replace", replace_after_sweep)
    (root / "a" / "empty").mkdir(parents=True)
    await driver.put("a/empty/put", b"put")
    (root / "b" / "empty").mkdir(parents=True)
    writer = await driver.open_writer("b/empty/written", 0)
    await writer.write(b"written")
    await writer.close()
    (root / "c" / "empty").mkdir(parents=True)
    await driver.commit("b/empty/written", "c/empty/committed")
    assert len(swept) == 3
    assert await driver.get("a/empty/put") == b"put"
    assert await driver.get("c/empty/committed") == b"written"
    with pytest.raises(ObjectNotFound):
        await driver.commit("b/empty/written", "c/empty/again")


async def test_writes_make_again_a_directory_swept_while_being_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory exists when the writer's mkdir runs (EEXIST) and a sweep removes it
    before mkdir checks that it is a directory: the writer makes it again."""
    driver = FilesystemDriver(tmp_path / "root")
    root = driver.root
    real_mkdir = os.mkdir
    swept: list[str] = []

    def mkdir_then_sweep(path: str | os.PathLike[str], mode: int = 0o777) -> None:
        directory = Path(path)
        if directory.name == "empty" and directory.is_dir() and str(directory) not in swept:
            directory.rmdir()
            swept.append(str(directory))
            raise FileExistsError(errno.EEXIST, "File exists", str(directory))
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir_then_sweep)
    (root / "a" / "empty").mkdir(parents=True)
    await driver.put("a/empty/put", b"put")
    (root / "b" / "empty").mkdir(parents=True)
    (root / "u").mkdir()
    writer = await driver.open_writer("u/written", 0)
    await writer.write(b"written")
    await writer.close()
    await driver.commit("u/written", "b/empty/committed")
    assert len(swept) == 2
    assert await driver.get("a/empty/put") == b"put"
    assert await driver.get("b/empty/committed") == b"written"


@pytest.mark.parametrize("file", ["blobs", "blobs/sha256/ab"])
async def test_a_file_where_a_directory_belongs_is_a_clear_error(tmp_path: Path, file: str) -> None:
    driver = FilesystemDriver(tmp_path)
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="not a directory"):
        await driver.put("blobs/sha256/ab/x", b"x")
    assert (tmp_path / file).read_bytes() == b"not a directory"


async def test_writers_and_sweeps_at_once(tmp_path: Path) -> None:
    """Sweeps that take every empty directory at once (a time in the future makes all of
    them old), while writers make objects in them and commits move objects into them."""
    driver = FilesystemDriver(tmp_path)
    stop = False

    async def sweeping() -> int:
        rounds = 0
        while not stop:
            await driver.sweep(time.time() + HOUR)
            rounds += 1
        return rounds

    sweeper = asyncio.ensure_future(sweeping())
    try:
        for n in range(100):
            upload, blob = f"uploads/{n % 3}/u", f"blobs/sha256/{n % 5:02x}/{n}"
            writer = await driver.open_writer(upload, 0)
            await writer.write(b"y")
            await writer.close()
            await driver.commit(upload, blob)
            assert await driver.get(blob) == b"y"
            await driver.delete(blob)
    finally:
        stop = True
        rounds = await sweeper
    assert rounds > 1
    assert [k async for k in driver.list_keys("")] == []
    await driver.sweep(time.time() + HOUR)
    assert os.listdir(tmp_path) == []
