"""Blobs held by repositories: existence, size, where the bytes are, mounting, unlinking."""

from __future__ import annotations

from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.base import MetadataStore
from moorage.registry.layout import blob_key
from moorage.storage.base import StorageDriver


class Blobs:
    def __init__(self, storage: StorageDriver, meta: MetadataStore) -> None:
        self.storage = storage
        self.meta = meta

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

    async def delete(self, repository: str, digest: Digest) -> None:
        """Remove the blob from the repository. Bytes stay until garbage collection."""
        if not await self.meta.unlink_blob(repository, str(digest)):
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in repository {repository}"
            )
