"""moorage.registry.uploads: leases that outlive slow requests and fence off lost ones."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.digest import Digest
from moorage.errors import RegistryError
from moorage.meta.sqlite import SQLiteMetadata
from moorage.registry.uploads import Uploads
from moorage.storage.memory import MemoryDriver


async def slow_body(parts: list[bytes], pause: float) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(pause)
        yield part


@pytest.fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    yield Uploads(MemoryDriver(), meta, lease=0.3)
    await meta.close()


async def test_a_slow_request_keeps_its_lease(uploads: Uploads) -> None:
    upload = await uploads.start("repo")
    parts = [bytes([n]) * 1000 for n in range(8)]
    # 8 x 0.1 s: well past the 0.3 s lease, renewed every 0.1 s.
    appended = await uploads.append("repo", upload.id, slow_body(parts, 0.1), None, None)
    assert appended.offset == 8000
    data = b"".join(parts)
    size = await uploads.finish(
        "repo",
        upload.id,
        Digest("sha256", hashlib.sha256(data).hexdigest()),
        slow_body([], 0),
        None,
        None,
    )
    assert size == 8000


async def test_a_request_that_lost_its_lease_cannot_record_progress(uploads: Uploads) -> None:
    upload = await uploads.start("repo")

    async def stalled() -> AsyncIterator[bytes]:
        yield b"a" * 100
        # Another request takes the upload over once the lease has run out...
        await asyncio.sleep(0.4)
        taken = await uploads.meta.acquire_upload(upload.id, "repo", None, uploads.clock(), 60)
        assert taken.offset == 0
        yield b"b" * 100

    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, stalled(), None, None)
    assert info.value.status == 416
    current = await uploads.meta.get_upload(upload.id, "repo")
    assert current is not None and current.offset == 0 and current.lease_until > 0
