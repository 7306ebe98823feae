"""moorage.registry.blobs: a blob's bytes, and where its downloads are redirected."""

from __future__ import annotations

from pathlib import Path

from moorage.digest import Digest
from moorage.meta.sqlite import SQLiteMetadata
from moorage.registry.blobs import Blobs
from moorage.registry.layout import blob_key
from moorage.registry.service import Registry
from moorage.storage.memory import MemoryDriver

DATA = bytes(range(256)) * 4
DIGEST = Digest.of(DATA)


async def test_read_streams_the_range_asked_for(registry: Registry) -> None:
    await registry.storage.put(blob_key(DIGEST), DATA)
    await registry.meta.add_blob("team/app", str(DIGEST), len(DATA))
    assert b"".join([bytes(c) async for c in registry.blobs.read(DIGEST)]) == DATA
    assert b"".join([bytes(c) async for c in registry.blobs.read(DIGEST, 10, 5)]) == DATA[10:15]
    assert b"".join([bytes(c) async for c in registry.blobs.read(DIGEST, 1000)]) == DATA[1000:]


class Presigning(MemoryDriver):
    """A memory driver that hands out URLs, recording what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, float]] = []

    async def download_url(self, key: str, expires: float) -> str | None:
        self.asked.append((key, expires))
        return f"https://store.test/{key}"


async def test_download_url_only_when_redirects_are_on(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "m.db")
    try:
        storage = Presigning()
        assert await Blobs(storage, meta).download_url(DIGEST) is None
        assert storage.asked == []
        redirecting = Blobs(storage, meta, download_redirect=60.0)
        url = await redirecting.download_url(DIGEST)
        assert url == f"https://store.test/{blob_key(DIGEST)}"
        assert storage.asked == [(blob_key(DIGEST), 60.0)]
    finally:
        await meta.close()
