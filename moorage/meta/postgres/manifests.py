"""Manifests and tags in PostgreSQL (``ManifestStore``, but for the history queries in
``history.py``). Lookups by key are coalesced (``Database._coalesced``); the guarded changes go
through the core, under the locks ``tag_port.py`` describes."""

from __future__ import annotations

from collections.abc import Sequence

from moorage.meta import tag_changes
from moorage.meta.postgres.database import REPO_ID, SELECT_REPO
from moorage.meta.postgres.tag_port import GuardedChanges
from moorage.meta.rows import MANIFEST_COLUMNS, REFERRER_COLUMNS, manifest_record, referrer_record
from moorage.model import Actor, ManifestRecord, PutResult, ReferrerRecord, TagGuard, push_tags

# Reads find the repository's id, and a tag's digest, in scalar subqueries: every table is
# then reached through its whole primary key (or an index prefix) bound to values, so the plan
# cannot depend on statistics. (Written as joins, a planner without statistics, as on a new
# database, scanned every manifest of the repository: 4 ms for 50 lookups instead of 0.3.)
_TAG_DIGEST = "(SELECT digest FROM tags WHERE repo_id = {repo} AND name = {tag})"
_RESOLVE_TAG = f"""
SELECT {MANIFEST_COLUMNS} FROM manifests m
WHERE m.repo_id = {REPO_ID.format("$1")}
  AND m.digest = {_TAG_DIGEST.format(repo=REPO_ID.format("$1"), tag="$2")}
"""
# Several at once: one such lookup per key, in a subquery that OFFSET 0 keeps the planner from
# flattening into a join.
_RESOLVE_TAGS = f"""
SELECT q.i, f.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (repository, tag, i)
CROSS JOIN LATERAL (
    SELECT {MANIFEST_COLUMNS} FROM manifests m
    WHERE m.repo_id = {REPO_ID.format("q.repository")}
      AND m.digest = {_TAG_DIGEST.format(repo=REPO_ID.format("q.repository"), tag="q.tag")}
    OFFSET 0
) f
"""
_GET_MANIFEST = f"""
SELECT {MANIFEST_COLUMNS} FROM manifests m
WHERE m.repo_id = {REPO_ID.format("$1")} AND m.digest = $2
"""
_GET_MANIFESTS = f"""
SELECT q.i, f.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (repository, digest, i)
CROSS JOIN LATERAL (
    SELECT {MANIFEST_COLUMNS} FROM manifests m
    WHERE m.repo_id = {REPO_ID.format("q.repository")} AND m.digest = q.digest OFFSET 0
) f
"""


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
            lambda port: tag_changes.put_manifest(port, repository, manifest, tags, actor, guard),
            **self._tag_locks(repository, push_tags(tags), guard),
        )

    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        lookup = self._coalesced(_GET_MANIFEST, _GET_MANIFESTS, manifest_record)
        return await lookup.get((repository, digest))

    async def resolve_tag(self, repository: str, tag: str) -> ManifestRecord | None:
        lookup = self._coalesced(_RESOLVE_TAG, _RESOLVE_TAGS, manifest_record)
        return await lookup.get((repository, tag))

    async def delete_manifest(
        self, repository: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        return await self._guarded(
            lambda port: tag_changes.delete_manifest(port, repository, digest, actor, guard),
            **self._repository_locks(repository, guard),
        )

    async def delete_tag(
        self, repository: str, tag: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        return await self._guarded(
            lambda port: tag_changes.delete_tag(port, repository, tag, actor, guard),
            **self._tag_locks(repository, (tag,), guard),
        )

    async def restore_tag(
        self, repository: str, tag: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> str | None:
        return await self._guarded(
            lambda port: tag_changes.restore_tag(port, repository, tag, digest, actor, guard),
            **self._tag_locks(repository, (tag,), guard),
        )

    async def repository_exists(self, repository: str) -> bool:
        if repository in self._repo_ids:
            return True
        return await self._fetchrow(SELECT_REPO, repository) is not None

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        rows = await self._fetch(
            f"SELECT name FROM tags WHERE repo_id = {REPO_ID.format('$1')} AND name > $2 "
            "ORDER BY name LIMIT $3",
            repository,
            last or "",
            limit,
        )
        return [row[0] for row in rows]

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        rows = await self._fetch(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
            last or "",
            limit,
        )
        return [row[0] for row in rows]

    async def referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[ReferrerRecord]:
        sql = (
            f"SELECT {REFERRER_COLUMNS} FROM manifests "
            f"WHERE repo_id = {REPO_ID.format('$1')} AND subject = $2"
        )
        args: tuple[object, ...] = (repository, subject)
        if artifact_type is not None:
            sql += " AND artifact_type = $3"
            args += (artifact_type,)
        rows = await self._fetch(sql + " ORDER BY digest", *args)
        return [referrer_record(row) for row in rows]
