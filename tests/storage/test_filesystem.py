"""Filesystem-specific guarantees: keys cannot escape the root, nothing half-written is visible."""

from __future__ import annotations

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
