"""The storage driver contract (moorage.storage.base), run against every driver."""

from __future__ import annotations

import os

import pytest

from moorage.storage.base import ObjectNotFound, StorageDriver


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
