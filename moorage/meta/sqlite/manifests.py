"""Manifests and tags in SQLite (``ManifestStore``, but for the history queries in
``history.py``). Reads run on the event loop through the reader connection; the guarded
changes go through the core (``tag_port.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from moorage.meta import tag_changes
from moorage.meta.rows import MANIFEST_COLUMNS, REFERRER_COLUMNS, manifest_record, referrer_record
from moorage.meta.sqlite.tag_port import GuardedChanges
from moorage.model import Actor, ManifestRecord, PutResult, ReferrerRecord, TagGuard


def _limit(limit: int | None) -> int:
    return -1 if limit is None else limit


class Manifests(GuardedChanges):
    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        tags: Sequence[str],
        actor: Actor,
        guard: TagGuard | None = None,
    ) -> PutResult:
        return await self._guarded(
            lambda port: tag_changes.put_manifest(port, repository, manifest, tags, actor, guard)
        )

    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return None
        row = self._reader.execute(
            f"SELECT {MANIFEST_COLUMNS} FROM manifests m WHERE m.repo_id = ? AND m.digest = ?",
            (repo_id, digest),
        ).fetchone()
        return None if row is None else manifest_record(row)

    async def resolve_tag(self, repository: str, tag: str) -> ManifestRecord | None:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return None
        row = self._reader.execute(
            f"SELECT {MANIFEST_COLUMNS} FROM tags t JOIN manifests m "
            "ON m.repo_id = t.repo_id AND m.digest = t.digest WHERE t.repo_id = ? AND t.name = ?",
            (repo_id, tag),
        ).fetchone()
        return None if row is None else manifest_record(row)

    async def delete_manifest(
        self, repository: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        return await self._guarded(
            lambda port: tag_changes.delete_manifest(port, repository, digest, actor, guard)
        )

    async def delete_tag(
        self, repository: str, tag: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        return await self._guarded(
            lambda port: tag_changes.delete_tag(port, repository, tag, actor, guard)
        )

    async def restore_tag(
        self, repository: str, tag: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> str | None:
        return await self._guarded(
            lambda port: tag_changes.restore_tag(port, repository, tag, digest, actor, guard)
        )

    async def repository_exists(self, repository: str) -> bool:
        return self._repo_id(repository) is not None

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return []
        rows = self._reader.execute(
            "SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?",
            (repo_id, last or "", _limit(limit)),
        ).fetchall()
        return [r[0] for r in rows]

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        rows = self._reader.execute(
            "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
            (last or "", _limit(limit)),
        ).fetchall()
        return [r[0] for r in rows]

    async def referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[ReferrerRecord]:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return []
        sql = f"SELECT {REFERRER_COLUMNS} FROM manifests WHERE repo_id = ? AND subject = ?"
        args: tuple[object, ...] = (repo_id, subject)
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            args += (artifact_type,)
        rows = self._reader.execute(sql + " ORDER BY digest", args).fetchall()
        return [referrer_record(row) for row in rows]
