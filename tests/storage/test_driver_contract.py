"""The storage driver contract (moorage.storage.base), run against every driver."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from moorage.storage.base import (
    ObjectNotFound,
    StorageDriver,
    StorageError,
    StoredObject,
    SweepReport,
    Writer,
    WriterBusy,
)
from tests.storage.conftest import Reopen
from tests.storage.leftovers import leave_leftovers


async def collect(
    driver: StorageDriver, key: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in driver.read(key, offset, length)])


async def test_put_get_stat(driver: StorageDriver) -> None:
    assert await driver.stat("a/b") is None
    await driver.put("a/b", b"hello")
    assert await driver.stat("a/b") == 5
    assert await driver.get("a/b") == b"hello"
    await driver.put("a/b", b"replaced")
    assert await driver.get("a/b") == b"replaced"


async def test_missing_objects_raise(driver: StorageDriver) -> None:
    with pytest.raises(ObjectNotFound):
        await driver.get("missing")
    with pytest.raises(ObjectNotFound):
        await collect(driver, "missing")
    assert await driver.delete("missing") is False


async def test_read_ranges(driver: StorageDriver) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await driver.put("blob", data)
    assert await collect(driver, "blob") == data
    assert await collect(driver, "blob", 10) == data[10:]
    assert await collect(driver, "blob", 1_000_000, 2_500_000) == data[1_000_000:3_500_000]
    assert await collect(driver, "blob", len(data)) == b""


async def test_writer_appends_and_resumes(driver: StorageDriver) -> None:
    writer = await driver.open_writer("uploads/x", 0)
    await writer.write(b"abc")
    await writer.write(b"def")
    assert writer.size == 6
    await writer.close()
    assert await driver.stat("uploads/x") == 6
    writer = await driver.open_writer("uploads/x", 6)
    await writer.write(b"ghi")
    await writer.close()
    assert await driver.get("uploads/x") == b"abcdefghi"


async def test_writer_discards_bytes_past_offset(driver: StorageDriver) -> None:
    """Bytes past the recorded offset (a write that failed half way) are dropped."""
    writer = await driver.open_writer("uploads/y", 0)
    await writer.write(b"good" + b"torn-chunk")
    await writer.close()
    writer = await driver.open_writer("uploads/y", 4)
    await writer.write(b"!")
    await writer.close()
    assert await driver.get("uploads/y") == b"good!"


async def test_large_write_through_writer(driver: StorageDriver) -> None:
    data = os.urandom(5 * 1024 * 1024)
    writer = await driver.open_writer("uploads/big", 0)
    for start in range(0, len(data), 70_000):
        await writer.write(data[start : start + 70_000])
    await writer.close()
    assert await collect(driver, "uploads/big") == data


async def test_commit_moves_atomically(driver: StorageDriver) -> None:
    writer = await driver.open_writer("uploads/z", 0)
    await writer.write(b"content")
    await writer.close()
    assert await driver.stat("blobs/final") is None
    await driver.commit("uploads/z", "blobs/final")
    assert await driver.get("blobs/final") == b"content"
    assert await driver.stat("uploads/z") is None


async def test_commit_onto_existing_target_keeps_target(driver: StorageDriver) -> None:
    await driver.put("blobs/same", b"content")
    writer = await driver.open_writer("uploads/dup", 0)
    await writer.write(b"content")
    await writer.close()
    await driver.commit("uploads/dup", "blobs/same")
    assert await driver.get("blobs/same") == b"content"
    assert await driver.stat("uploads/dup") is None


async def test_commit_of_missing_source_raises(driver: StorageDriver) -> None:
    with pytest.raises(ObjectNotFound):
        await driver.commit("uploads/none", "blobs/none")


async def test_delete_and_list(driver: StorageDriver) -> None:
    for key in ("blobs/sha256/aa/1", "blobs/sha256/bb/2", "uploads/3"):
        await driver.put(key, b"x")
    keys = sorted([k async for k in driver.list_keys("blobs/")])
    assert keys == ["blobs/sha256/aa/1", "blobs/sha256/bb/2"]
    assert await driver.delete("blobs/sha256/aa/1") is True
    assert sorted([k async for k in driver.list_keys("blobs/")]) == ["blobs/sha256/bb/2"]
    assert [k async for k in driver.list_keys("nothing/")] == []


async def test_open_writer_past_end_fails(driver: StorageDriver) -> None:
    await driver.put("uploads/short", b"ab")
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own StorageError
        await driver.open_writer("uploads/short", 10)


async def write_sessions(driver: StorageDriver, key: str, parts: list[bytes]) -> bytes:
    """One writer session per part, each continuing where the previous one ended."""
    offset = 0
    for part in parts:
        writer = await driver.open_writer(key, offset)
        assert writer.size == offset
        await writer.write(part)
        await writer.close()
        offset += len(part)
    return b"".join(parts)


async def test_empty_writer_makes_an_empty_object(driver: StorageDriver) -> None:
    """``Uploads.start`` opens and closes a writer before any byte arrives."""
    writer = await driver.open_writer("uploads/empty", 0)
    await writer.close()
    assert await driver.stat("uploads/empty") == 0
    assert await driver.get("uploads/empty") == b""
    await driver.commit("uploads/empty", "blobs/empty")
    assert await driver.get("blobs/empty") == b""


async def test_writer_continued_by_another_driver(driver: StorageDriver, reopen: Reopen) -> None:
    """Chunks of one upload land on different processes, each with its own driver."""
    first = await driver.open_writer("uploads/shared", 0)
    await first.write(b"from one ")
    await first.close()
    other = reopen()
    assert await other.stat("uploads/shared") == 9
    second = await other.open_writer("uploads/shared", 9)
    await second.write(b"and from another")
    await second.close()
    await driver.commit("uploads/shared", "blobs/shared")
    assert await other.get("blobs/shared") == b"from one and from another"


async def test_abort_then_resume_at_recorded_offset(driver: StorageDriver) -> None:
    writer = await driver.open_writer("uploads/a", 0)
    await writer.write(b"good")
    await writer.close()
    writer = await driver.open_writer("uploads/a", 4)
    await writer.write(b"half a chunk")
    await writer.abort()
    writer = await driver.open_writer("uploads/a", 4)
    await writer.write(b"!")
    await writer.close()
    assert await driver.get("uploads/a") == b"good!"


async def test_resume_inside_an_earlier_session(driver: StorageDriver) -> None:
    data = await write_sessions(driver, "uploads/cut", [b"aaaa", b"bbbb", b"cccc"])
    for offset, tail in ((6, b"X"), (2, b"YY"), (0, b"fresh")):
        writer = await driver.open_writer("uploads/cut", offset)
        await writer.write(tail)
        await writer.close()
        data = data[:offset] + tail
        assert await driver.get("uploads/cut") == data
        assert await driver.stat("uploads/cut") == len(data)


async def test_range_reads_across_session_boundaries(driver: StorageDriver) -> None:
    parts = [os.urandom(n) for n in (1, 700, 3, 1500, 64, 9)]
    data = await write_sessions(driver, "uploads/r", parts)
    await driver.commit("uploads/r", "blobs/r")
    bounds = [0, 1, 2, 700, 701, 703, 704, 1000, 2203, 2204, 2267, 2268, len(data)]
    for start in bounds:
        for end in bounds:
            if end >= start:
                got = await collect(driver, "blobs/r", start, end - start)
                assert got == data[start:end], (start, end)
    assert await collect(driver, "blobs/r", 2000) == data[2000:]
    assert await collect(driver, "blobs/r", 5, 10_000) == data[5:]


async def test_commit_of_many_small_sessions(driver: StorageDriver) -> None:
    parts = [os.urandom(100 + n) for n in range(40)]
    data = await write_sessions(driver, "uploads/many", parts)
    await driver.commit("uploads/many", "blobs/many")
    assert await driver.stat("blobs/many") == len(data)
    assert await driver.get("blobs/many") == data
    assert await collect(driver, "blobs/many", 150, 1000) == data[150:1150]


async def test_concurrent_commits_to_one_target(driver: StorageDriver) -> None:
    """Two uploads of one blob finish at once: one wins, the other's bytes go away."""
    data = os.urandom(20_000)
    for name in ("uploads/c1", "uploads/c2", "uploads/c3"):
        await write_sessions(driver, name, [data[:5000], data[5000:]])
    await asyncio.gather(
        *(driver.commit(name, "blobs/same") for name in ("uploads/c1", "uploads/c2", "uploads/c3"))
    )
    assert await driver.get("blobs/same") == data
    for name in ("uploads/c1", "uploads/c2", "uploads/c3"):
        assert await driver.stat(name) is None
    assert sorted([k async for k in driver.list_keys("")]) == ["blobs/same"]


async def test_delete_removes_a_written_object(driver: StorageDriver) -> None:
    await write_sessions(driver, "uploads/d", [b"one", b"two"])
    assert await driver.delete("uploads/d") is True
    assert await driver.stat("uploads/d") is None
    assert await driver.delete("uploads/d") is False
    with pytest.raises(ObjectNotFound):
        await driver.open_writer("uploads/d", 3)


async def test_put_replaces_a_written_object_and_a_writer_continues_a_put(
    driver: StorageDriver,
) -> None:
    await write_sessions(driver, "k", [b"written"])
    await driver.put("k", b"put")
    assert await driver.get("k") == b"put"
    writer = await driver.open_writer("k", 2)
    await writer.write(b"zzle")
    await writer.close()
    assert await driver.get("k") == b"puzzle"


async def test_committed_object_survives_deleting_its_source_key(driver: StorageDriver) -> None:
    await write_sessions(driver, "uploads/s", [b"abc", b"def"])
    await driver.commit("uploads/s", "blobs/s")
    assert await driver.delete("uploads/s") is False
    assert await driver.get("blobs/s") == b"abcdef"
    await write_sessions(driver, "uploads/s", [b"other"])
    assert await driver.delete("uploads/s") is True
    assert await driver.get("blobs/s") == b"abcdef"


async def test_list_keys_by_partial_name(driver: StorageDriver) -> None:
    for key in ("blobs/sha256/aa/1", "blobs/sha256/ab/2", "blobs/sha256/ba/3"):
        await driver.put(key, b"x")
    await write_sessions(driver, "uploads/u", [b"y"])
    assert sorted([k async for k in driver.list_keys("blobs/sha256/a")]) == [
        "blobs/sha256/aa/1",
        "blobs/sha256/ab/2",
    ]
    assert sorted([k async for k in driver.list_keys("")]) == [
        "blobs/sha256/aa/1",
        "blobs/sha256/ab/2",
        "blobs/sha256/ba/3",
        "uploads/u",
    ]
    assert [k async for k in driver.list_keys("uploads/u")] == ["uploads/u"]


# -- checkpoints: what a writer has made durable outlives it ----------------------------------

MIB = 1024 * 1024


async def write_in_pieces(writer: Writer, data: bytes, piece: int = 100_000) -> None:
    for start in range(0, len(data), piece):
        await writer.write(data[start : start + piece])


async def test_checkpoint_outlives_a_writer_that_never_finishes(
    driver: StorageDriver, reopen: Reopen
) -> None:
    """A process dies after a checkpoint: another one resumes at the checkpoint's offset."""
    first = os.urandom(3 * MIB + 5)
    writer = await driver.open_writer("uploads/ck", 0)
    await write_in_pieces(writer, first)
    durable = await writer.checkpoint()
    await writer.write(b"after the checkpoint" * 1000)  # never closed: lost with the process
    await durable
    other = reopen()
    size = await other.stat("uploads/ck")
    assert size is not None and size >= len(first)
    await writer.abort()  # what the process's end does: the writer is gone, never closed
    resumed = await other.open_writer("uploads/ck", len(first))
    assert resumed.size == len(first)
    await resumed.write(b"!")
    await resumed.close()
    assert await other.get("uploads/ck") == first + b"!"


async def test_abort_waits_for_checkpoints_and_keeps_them(driver: StorageDriver) -> None:
    data = os.urandom(2 * MIB)
    writer = await driver.open_writer("uploads/ab", 0)
    await write_in_pieces(writer, data[: 3 * MIB // 2])
    durable = asyncio.ensure_future(await writer.checkpoint())
    await write_in_pieces(writer, data[3 * MIB // 2 :])
    await writer.abort()
    assert durable.done()
    await durable
    writer = await driver.open_writer("uploads/ab", 3 * MIB // 2)
    await writer.write(b"end")
    await writer.close()
    assert await driver.get("uploads/ab") == data[: 3 * MIB // 2] + b"end"


async def test_checkpoints_while_writing_and_resuming_at_each(driver: StorageDriver) -> None:
    """Writes go on while checkpoints complete; every checkpoint is a place to resume from."""
    parts = [os.urandom(n) for n in (700_000, 1_300_000, 5, 0, 2 * MIB)]
    writer = await driver.open_writer("uploads/cks", 0)
    offsets: list[int] = []
    durable: list[asyncio.Future[None]] = []
    for part in parts:
        await write_in_pieces(writer, part, 64 * 1024)
        durable.append(asyncio.ensure_future(await writer.checkpoint()))
        offsets.append(writer.size)
    await writer.write(b"tail")
    await writer.close()
    assert all(future.done() for future in durable)
    await asyncio.gather(*durable)
    data = b"".join(parts) + b"tail"
    assert await driver.stat("uploads/cks") == len(data)
    assert await driver.get("uploads/cks") == data
    for offset in reversed(offsets):
        writer = await driver.open_writer("uploads/cks", offset)
        await writer.write(b"X")
        await writer.close()
        assert await driver.get("uploads/cks") == data[:offset] + b"X"
    await driver.commit("uploads/cks", "blobs/cks")
    assert await driver.get("blobs/cks") == data[: offsets[0]] + b"X"


async def test_checkpoint_of_an_empty_writer(driver: StorageDriver, reopen: Reopen) -> None:
    writer = await driver.open_writer("uploads/none", 0)
    await (await writer.checkpoint())
    await writer.abort()
    assert await reopen().stat("uploads/none") == 0


async def test_two_writers_of_one_key_never_mix(driver: StorageDriver, reopen: Reopen) -> None:
    """A writer still open (its process stalled past its lease) and a later one: the later
    one is refused, or the first one's bytes never land; the object is one writer's bytes."""
    base = os.urandom(700_000)
    await write_sessions(driver, "uploads/two", [base])
    stalled = await driver.open_writer("uploads/two", len(base))
    await stalled.write(b"S" * 1_200_000)
    await (await stalled.checkpoint())
    await stalled.write(b"s" * 300_000)
    other = reopen()
    try:
        later = await other.open_writer("uploads/two", len(base))
    except WriterBusy:
        await stalled.close()  # the first writer goes on and finishes alone
        assert await other.get("uploads/two") == base + b"S" * 1_200_000 + b"s" * 300_000
        return
    await later.write(b"L" * 500_000)
    await later.close()
    with pytest.raises(StorageError):
        await stalled.write(b"s" * 2_000_000)
        await stalled.close()
    await stalled.abort()
    assert await other.get("uploads/two") == base + b"L" * 500_000


# -- what garbage collection needs: objects with their size and age, the leftovers swept -----

#: Seconds a listed time may be off the test's clock (S3 keeps whole seconds).
SLACK = 2.0
HOUR = 3600.0


async def store_objects(driver: StorageDriver) -> dict[str, bytes]:
    """Objects of every kind a driver stores: tiny and larger ``put`` objects, an object of
    several writer sessions, and one committed; the bytes of each."""
    objects = {"blobs/sha256/aa/tiny": b"tiny", "blobs/sha256/ab/plain": os.urandom(70_000)}
    for key, data in objects.items():
        await driver.put(key, data)
    parts = [os.urandom(n) for n in (1000, 2000)]
    objects["uploads/w"] = await write_sessions(driver, "uploads/w", parts)
    parts = [os.urandom(n) for n in (3000, 4000, 5)]
    objects["blobs/sha256/ac/c"] = await write_sessions(driver, "uploads/c", parts)
    await driver.commit("uploads/c", "blobs/sha256/ac/c")
    return objects


async def listed(driver: StorageDriver, prefix: str) -> dict[str, StoredObject]:
    return {found.key: found async for found in driver.list_objects(prefix)}


async def check_objects(driver: StorageDriver, objects: dict[str, bytes]) -> None:
    """The driver holds exactly ``objects``, each whole."""
    assert sorted([key async for key in driver.list_keys("")]) == sorted(objects)
    for key, data in objects.items():
        assert await driver.stat(key) == len(data), key
        assert await driver.get(key) == data, key


async def test_list_objects_with_sizes_and_times(driver: StorageDriver) -> None:
    started = time.time()
    objects = await store_objects(driver)
    ended = time.time()
    found = await listed(driver, "")
    assert {key: o.size for key, o in found.items()} == {k: len(d) for k, d in objects.items()}
    for stored in found.values():
        assert started - SLACK <= stored.modified <= ended + SLACK, stored
    assert sorted(found) == sorted([key async for key in driver.list_keys("")])
    assert sorted(await listed(driver, "blobs/sha256/a")) == [
        "blobs/sha256/aa/tiny",
        "blobs/sha256/ab/plain",
        "blobs/sha256/ac/c",
    ]
    assert list(await listed(driver, "uploads/")) == ["uploads/w"]
    assert list(await listed(driver, "blobs/sha256/ac/c")) == ["blobs/sha256/ac/c"]
    assert await listed(driver, "nothing/") == {}
    assert await listed(driver, "blobs/sha256/b") == {}


async def test_list_objects_shows_a_writer_s_object_never_its_private_files(
    driver: StorageDriver,
) -> None:
    data = os.urandom(MIB + 7)
    writer = await driver.open_writer("uploads/open", 0)
    await write_in_pieces(writer, data)
    await (await writer.checkpoint())
    await writer.write(b"more")
    found = await listed(driver, "")
    assert list(found) == ["uploads/open"]
    # What is stored of a writer still open: at least what it checkpointed.
    assert len(data) <= found["uploads/open"].size <= len(data) + 4
    await writer.close()
    assert (await listed(driver, ""))["uploads/open"].size == len(data) + 4


async def test_sweep_keeps_young_leftovers_and_every_object(driver: StorageDriver) -> None:
    objects = await store_objects(driver)
    expected = await leave_leftovers(driver)
    assert await driver.sweep(time.time() - HOUR, dry_run=True) == SweepReport()
    assert await driver.sweep(time.time() - HOUR) == SweepReport()
    # Still there: a sweep of everything would take them.
    assert await driver.sweep(time.time() + HOUR, dry_run=True) == expected
    await check_objects(driver, objects)


async def test_sweep_takes_old_leftovers_never_what_an_object_uses(
    driver: StorageDriver, reopen: Reopen
) -> None:
    """A time in the future makes everything old: only leftovers go, even then; a writer
    still at work keeps what it checkpointed and goes on."""
    objects = await store_objects(driver)
    checkpointed = os.urandom(MIB + 3)
    live = await driver.open_writer("uploads/live", 0)
    await write_in_pieces(live, checkpointed)
    await (await live.checkpoint())
    expected = await leave_leftovers(driver)
    future = time.time() + HOUR
    assert await driver.sweep(future, dry_run=True) == expected
    assert await driver.sweep(future, dry_run=True) == expected  # the dry run took nothing
    swept = await reopen().sweep(future)
    assert swept == expected
    assert await driver.sweep(future) == SweepReport()
    await live.write(b"tail")
    await live.close()
    objects["uploads/live"] = checkpointed + b"tail"
    await check_objects(driver, objects)
    assert {o.key: o.size for o in (await listed(driver, "")).values()} == {
        key: len(data) for key, data in objects.items()
    }
