"""Blobs held by repositories: existence, size, their bytes, mounting, unlinking."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.protocols import BlobStore
from moorage.model import Actor, TagGuard
from moorage.registry.layout import blob_key
from moorage.storage.base import Chunk, StorageDriver


@dataclass
class BlobCounters:
    """Events of this process's blob service, for metrics."""

    #: Downloads whose client closed the connection before the last byte was sent.
    client_aborts: int = 0


class Blobs:
    def __init__(
        self,
        storage: StorageDriver,
        meta: BlobStore,
        *,
        download_redirect: float | None = None,
    ) -> None:
        self.storage = storage
        self.meta = meta
        #: Send downloads to the storage's presigned URLs, valid this many seconds (or None).
        self.download_redirect = download_redirect
        self.counters = BlobCounters()

    async def size(self, repository: str, digest: Digest) -> int:
        """Size of a blob the repository holds; BLOB_UNKNOWN otherwise."""
        size = await self.meta.blob_size(repository, str(digest))
        if size is None:
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in repository {repository}"
            )
        return size

    def read(
        self, digest: Digest, start: int = 0, length: int | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream ``length`` bytes of the blob (or to its end) from ``start``."""
        return self.storage.read(blob_key(digest), start, length)

    async def download_url(self, digest: Digest) -> str | None:
        """A URL the storage serves the blob's bytes at, to redirect a download to; None when
        downloads are not redirected, or the storage has no such URL for this blob."""
        if self.download_redirect is None:
            return None
        return await self.storage.download_url(blob_key(digest), self.download_redirect)

    async def mount(self, repository: str, digest: Digest, source: str | None) -> int | None:
        """Link a blob from ``source`` (or anywhere if None) into ``repository``; its size."""
        if source == repository:
            return await self.meta.blob_size(repository, str(digest))
        size = await self.meta.mount_blob(repository, str(digest), source)
        if size is not None and await self.storage.stat(blob_key(digest)) is None:
            # Metadata knows the blob but its bytes are gone: do not hand out a dangling link.
            await self.meta.unlink_blob(repository, str(digest))
            return None
        return size

    async def delete(
        self, repository: str, digest: Digest, actor: Actor, guard: TagGuard | None = None
    ) -> None:
        """Remove the blob from the repository. Bytes stay until garbage collection.

        With a guard, refused (TagRefused) while a tag it protects reaches the blob through a
        manifest: deleting the blob would break that tag's image.
        """
        if not await self.meta.unlink_blob(repository, str(digest), actor, guard):
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in repository {repository}"
            )
