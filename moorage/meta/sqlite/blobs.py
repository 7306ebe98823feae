"""Blobs in SQLite (``BlobStore``): stored once (``blobs``), linked per repository."""

from __future__ import annotations

import sqlite3

from moorage.meta import tag_changes
from moorage.meta.sqlite.database import LINK_BLOB, ensure_repo, record_blob
from moorage.meta.sqlite.tag_port import GuardedChanges
from moorage.model import REGISTRY_ACTOR, Actor, TagGuard


class Blobs(GuardedChanges):
    async def add_blob(self, repository: str, digest: str, size: int) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            now = self._clock()
            record_blob(conn, ensure_repo(conn, repository, now), digest, size, now)

        await self._write(tx)

    async def blob_size(self, repository: str, digest: str) -> int | None:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return None
        row = self._reader.execute(
            "SELECT b.size FROM repository_blobs r JOIN blobs b ON b.digest = r.digest "
            "WHERE r.repo_id = ? AND r.digest = ?",
            (repo_id, digest),
        ).fetchone()
        return None if row is None else int(row[0])

    async def find_blob(self, digest: str) -> int | None:
        row = self._reader.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else int(row[0])

    async def mount_blob(self, repository: str, digest: str, source: str | None) -> int | None:
        def tx(conn: sqlite3.Connection) -> int | None:
            if source is None:
                row = conn.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchone()
            else:
                row = conn.execute(
                    "SELECT b.size FROM repository_blobs r "
                    "JOIN repositories p ON p.id = r.repo_id "
                    "JOIN blobs b ON b.digest = r.digest WHERE p.name = ? AND r.digest = ?",
                    (source, digest),
                ).fetchone()
            if row is None:
                return None
            now = self._clock()
            conn.execute(LINK_BLOB, (ensure_repo(conn, repository, now), digest, now))
            return int(row[0])

        return await self._write(tx)

    async def unlink_blob(
        self,
        repository: str,
        digest: str,
        actor: Actor = REGISTRY_ACTOR,
        guard: TagGuard | None = None,
    ) -> bool:
        return await self._guarded(
            lambda port: tag_changes.unlink_blob(port, repository, digest, actor, guard)
        )
