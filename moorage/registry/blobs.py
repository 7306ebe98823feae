"""Blobs held by repositories: existence, size, where the bytes are, mounting, unlinking."""

from __future__ import annotations

from dataclasses import dataclass

from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.base import MetadataStore
from moorage.model import Actor, TagGuard
from moorage.registry.layout import blob_key
from moorage.storage.base import StorageDriver


@dataclass
class BlobCounters:
    """Events of this process's blob service, for metrics."""

    #: Downloads whose client closed the connection before the last byte was sent.
    client_aborts: int = 0


class Blobs:
    def __init__(self, storage: StorageDriver, meta: MetadataStore) -> None:
        self.storage = storage
        self.meta = meta
        self.counters = BlobCounters()

    async def size(self, repository: str, digest: Digest) -> int:
        """Size of a blob the repository holds; BLOB_UNKNOWN otherwise."""
        size = await self.meta.blob_size(repository, str(digest))
        if size is None:
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in repository {repository}"
            )
        return size

    def key(self, digest: Digest) -> str:
        return blob_key(digest)

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
