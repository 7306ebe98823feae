"""Usage per repository in SQLite (``UsageStore``).

A flush of a worker's counters is one write (one savepoint of a group commit): an upsert per
repository into ``repository_usage`` and per manifest into ``manifest_pulls``, adding the
counts and keeping the later time. The report is one statement (one snapshot): per
repository, aggregates over its manifests, tags and blob links (each through its primary
key's ``repo_id`` prefix); a blob is shared when another repository links it too, which the
``repository_blobs_by_digest`` index answers. Over every repository it reads every link, so
it runs on a thread, on a connection of its own, not inline on the event loop as the
indexed lookups of the hot path do.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

from moorage.meta.rows import USAGE_REPORT, manifest_pull_values, repository_usage, usage_values
from moorage.meta.sqlite.database import Database, connect
from moorage.model import ManifestPulls, RepositoryUsage, UsageCount

# max() of SQLite is NULL if any argument is: the later time, of those that are known.
_ADD_USAGE = """
INSERT INTO repository_usage (repo_id, pulls, pushes, last_pull, last_push)
SELECT id, ?2, ?3, ?4, ?5 FROM repositories WHERE name = ?1
ON CONFLICT (repo_id) DO UPDATE SET
    pulls = repository_usage.pulls + excluded.pulls,
    pushes = repository_usage.pushes + excluded.pushes,
    last_pull = max(coalesce(repository_usage.last_pull, excluded.last_pull),
                    coalesce(excluded.last_pull, repository_usage.last_pull)),
    last_push = max(coalesce(repository_usage.last_push, excluded.last_push),
                    coalesce(excluded.last_push, repository_usage.last_push))
"""
_ADD_MANIFEST_PULLS = """
INSERT INTO manifest_pulls (repo_id, digest, pulls, last_pull)
SELECT id, ?2, ?3, ?4 FROM repositories WHERE name = ?1
ON CONFLICT (repo_id, digest) DO UPDATE SET
    pulls = manifest_pulls.pulls + excluded.pulls,
    last_pull = max(manifest_pulls.last_pull, excluded.last_pull)
"""

#: The usage report; {where} picks the repositories (one by name, or all).
_REPORT_ONE = USAGE_REPORT.format(where="name = ?")
_REPORT_ALL = USAGE_REPORT.format(where="1 = 1")


class Usage(Database):
    async def record_usage(self, counts: Sequence[UsageCount]) -> None:
        repositories = usage_values(counts)
        manifests = manifest_pull_values(counts)
        if not repositories:
            return

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(_ADD_USAGE, repositories)
            conn.executemany(_ADD_MANIFEST_PULLS, manifests)

        await self._write(tx)

    async def repository_usage(self, repository: str | None) -> list[RepositoryUsage]:
        sql, args = (_REPORT_ALL, ()) if repository is None else (_REPORT_ONE, (repository,))

        def read() -> list[RepositoryUsage]:
            conn = connect(self.path)
            try:
                return [repository_usage(row) for row in conn.execute(sql, args)]
            finally:
                conn.close()

        return await asyncio.to_thread(read)

    async def manifest_pulls(self, repository: str) -> list[ManifestPulls]:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return []
        rows = self._reader.execute(
            "SELECT digest, pulls, last_pull FROM manifest_pulls WHERE repo_id = ? ORDER BY digest",
            (repo_id,),
        )
        return [ManifestPulls(*row) for row in rows]
