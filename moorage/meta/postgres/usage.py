"""Usage per repository in PostgreSQL (``UsageStore``).

A flush of a worker's counters is one transaction of two statements: an upsert of every
repository's counts into ``repository_usage``, then of every manifest's into
``manifest_pulls``, adding the counts and keeping the later time (``GREATEST`` ignores
NULLs). Rows come sorted (``rows.usage_values``), so replicas flushing at once lock them in
one order; a deadlock would anyway run the transaction again, and a rolled-back one added
nothing. Repositories that do not exist are dropped. No advisory lock: the row locks of the
upserts are all it needs.

The report is one statement (one snapshot): per repository, aggregates over its manifests,
tags and blob links; a blob is shared when another repository links it too
(``repository_blobs_by_digest``). It is an administrator's query, so unlike the hot reads it
is written with joins and aggregates and left to the planner.
"""

from __future__ import annotations

from collections.abc import Sequence

from moorage.meta.postgres.database import REPO_ID, Database, Transaction
from moorage.meta.rows import USAGE_REPORT, manifest_pull_values, repository_usage, usage_values
from moorage.model import ManifestPulls, RepositoryUsage, UsageCount

_ADD_USAGE = f"""
INSERT INTO repository_usage (repo_id, pulls, pushes, last_pull, last_push)
SELECT repo_id, pulls, pushes, last_pull, last_push FROM (
    SELECT {REPO_ID.format("u.name")} AS repo_id, u.pulls, u.pushes, u.last_pull, u.last_push,
        u.ord
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::float8[], $5::float8[])
        WITH ORDINALITY AS u (name, pulls, pushes, last_pull, last_push, ord)
) c WHERE repo_id IS NOT NULL ORDER BY ord
ON CONFLICT (repo_id) DO UPDATE SET
    pulls = repository_usage.pulls + excluded.pulls,
    pushes = repository_usage.pushes + excluded.pushes,
    last_pull = GREATEST(repository_usage.last_pull, excluded.last_pull),
    last_push = GREATEST(repository_usage.last_push, excluded.last_push)
"""
_ADD_MANIFEST_PULLS = f"""
INSERT INTO manifest_pulls (repo_id, digest, pulls, last_pull)
SELECT repo_id, digest, pulls, last_pull FROM (
    SELECT {REPO_ID.format("u.name")} AS repo_id, u.digest, u.pulls, u.last_pull, u.ord
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[])
        WITH ORDINALITY AS u (name, digest, pulls, last_pull, ord)
) c WHERE repo_id IS NOT NULL ORDER BY ord
ON CONFLICT (repo_id, digest) DO UPDATE SET
    pulls = manifest_pulls.pulls + excluded.pulls,
    last_pull = GREATEST(manifest_pulls.last_pull, excluded.last_pull)
"""

#: The usage report; {where} picks the repositories (one by name, or all).
_REPORT_ONE = USAGE_REPORT.format(where="name = $1")
_REPORT_ALL = USAGE_REPORT.format(where="true")


class Usage(Database):
    async def record_usage(self, counts: Sequence[UsageCount]) -> None:
        repositories = usage_values(counts)
        manifests = manifest_pull_values(counts)
        if not repositories:
            return

        async def tx(t: Transaction) -> None:
            await t.conn.execute(
                _ADD_USAGE, *(list(column) for column in zip(*repositories, strict=True))
            )
            if manifests:
                await t.conn.execute(
                    _ADD_MANIFEST_PULLS, *(list(column) for column in zip(*manifests, strict=True))
                )

        await self._transaction(tx)

    async def repository_usage(self, repository: str | None) -> list[RepositoryUsage]:
        if repository is None:
            rows = await self._fetch(_REPORT_ALL)
        else:
            rows = await self._fetch(_REPORT_ONE, repository)
        return [repository_usage(row) for row in rows]

    async def manifest_pulls(self, repository: str) -> list[ManifestPulls]:
        rows = await self._fetch(
            "SELECT digest, pulls, last_pull FROM manifest_pulls "
            f"WHERE repo_id = {REPO_ID.format('$1')} ORDER BY digest",
            repository,
        )
        return [ManifestPulls(row[0], int(row[1]), row[2]) for row in rows]
