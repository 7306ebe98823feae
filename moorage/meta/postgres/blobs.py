"""Blobs in PostgreSQL (``BlobStore``): stored once (``blobs``), linked per repository."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moorage.meta import tag_changes
from moorage.meta.postgres.database import LINK_BLOB, REPO_ID, Transaction, blob_lock, record_blob
from moorage.meta.postgres.tag_port import UNLINK_BLOB, GuardedChanges
from moorage.model import REGISTRY_ACTOR, Actor, TagGuard

_BLOB_SIZE = f"""
SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest
WHERE l.repo_id = {REPO_ID.format("$1")} AND l.digest = $2
"""
_BLOB_SIZES = f"""
SELECT q.i, f.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (repository, digest, i)
CROSS JOIN LATERAL (
    SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest
    WHERE l.repo_id = {REPO_ID.format("q.repository")} AND l.digest = q.digest OFFSET 0
) f
"""
_UNLINK_BY_NAME = UNLINK_BLOB.replace("$1", REPO_ID.format("$1"))


def _size(row: Sequence[Any]) -> int:
    return int(row[0])


class Blobs(GuardedChanges):
    async def add_blob(self, repository: str, digest: str, size: int) -> None:
        async def tx(t: Transaction) -> None:
            now = self._clock()
            await record_blob(t, await t.ensure_repo(repository, now), digest, size, now)

        await self._transaction(tx, shared=(blob_lock(digest),))

    async def blob_size(self, repository: str, digest: str) -> int | None:
        return await self._coalesced(_BLOB_SIZE, _BLOB_SIZES, _size).get((repository, digest))

    async def find_blob(self, digest: str) -> int | None:
        row = await self._fetchrow("SELECT size FROM blobs WHERE digest = $1", digest)
        return None if row is None else int(row[0])

    async def mount_blob(self, repository: str, digest: str, source: str | None) -> int | None:
        async def tx(t: Transaction) -> int | None:
            if source is None:
                size = await t.conn.fetchval("SELECT size FROM blobs WHERE digest = $1", digest)
            else:
                size = await t.conn.fetchval(
                    "SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest "
                    f"WHERE l.repo_id = {REPO_ID.format('$1')} AND l.digest = $2",
                    source,
                    digest,
                )
            if size is None:
                return None
            now = self._clock()
            await t.conn.execute(LINK_BLOB, await t.ensure_repo(repository, now), digest, now)
            return int(size)

        # Shared with other recordings of the blob; garbage collection retires its record
        # exclusively, so a mount either links a blob still recorded or finds none.
        return await self._transaction(tx, shared=(blob_lock(digest),))

    async def unlink_blob(
        self,
        repository: str,
        digest: str,
        actor: Actor = REGISTRY_ACTOR,
        guard: TagGuard | None = None,
    ) -> bool:
        if guard is None:  # nothing to judge: one statement, no transaction
            return await self._change(_UNLINK_BY_NAME, repository, digest)
        # The whole repository, as for a manifest deletion: no push may add a user meanwhile.
        return await self._guarded(
            lambda port: tag_changes.unlink_blob(port, repository, digest, actor, guard),
            **self._repository_locks(repository, guard),
        )
