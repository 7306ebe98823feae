"""Garbage collection in PostgreSQL (``CollectionStore``) and the cluster inventory
(``InventoryStore``).

Which change takes which lock, so that replicas pushing, mounting and collecting at once
never leave a record of bytes that are gone:

- sweeping a repository holds the repository's lock exclusively, as a manifest deletion
  does: pushes (shared) wait, so the contents it judged are the contents it deletes from;
  and the tag policy's lock shared, as a guarded tag change does, so the policy version it
  read (which retention rules obey) stays in force until it commits;
- retiring a blob record, or marking a deletion as deleting, holds the blob's lock
  (``blob_lock``) exclusively; recording a blob (an upload completing, ``add_blob``) and
  mounting it hold it shared. A mount thus links a blob still recorded or finds none;
- an upload that takes its lease to complete as a digest locks the digest's deletion row
  (shared); marking it as deleting locks the row first (exclusively), then looks for such
  uploads in a statement of its own, which sees every one that committed meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from moorage.meta import collection
from moorage.meta.collection import (
    DELETION_COLUMNS,
    HISTORY_COLUMNS,
    MANIFEST_COLUMNS,
    REFERENCE_COLUMNS,
    RUNNING_COLUMNS,
    TAG_COLUMNS,
)
from moorage.meta.postgres.database import (
    POLICY_LOCK,
    Database,
    Transaction,
    blob_lock,
    lock_key,
)
from moorage.meta.postgres.tag_port import delete_tags
from moorage.meta.protocols import Planner
from moorage.meta.rows import PIN_COLUMNS, pin_record
from moorage.model import BlobDeletion, RepositorySweep, RunningImage

#: Blobs handled in one transaction (and as many locks held).
BATCH = 500

_LOCK_ALL = (
    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest($1::bigint[]) AS k ORDER BY k) s"
)
_UNLINKED = "NOT EXISTS (SELECT 1 FROM repository_blobs l WHERE l.digest = b.digest)"


def _batches(digests: Sequence[str]) -> list[list[str]]:
    ordered = sorted(set(digests))
    return [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]


async def _lock_blobs(t: Transaction, digests: Sequence[str]) -> None:
    """Hold the blobs' locks exclusively, taken in ascending order (no deadlocks)."""
    await t.conn.fetchval(_LOCK_ALL, [blob_lock(digest) for digest in digests])


class Collection(Database):
    async def collect_repository(
        self,
        repository: str,
        plan: Planner,
        *,
        pins_since: float,
        history_since: float,
        hosts: Sequence[str],
        apply: bool,
    ) -> RepositorySweep:
        async def sweep(t: Transaction) -> RepositorySweep:
            repo_id = await t.repo_id(repository)
            if repo_id is None:
                return RepositorySweep(repository)
            fetch = t.conn.fetch
            found = collection.contents(
                repository,
                await fetch(
                    f"SELECT {MANIFEST_COLUMNS} FROM manifests WHERE repo_id = $1", repo_id
                ),
                await fetch(
                    f"SELECT {REFERENCE_COLUMNS} FROM manifest_references WHERE repo_id = $1",
                    repo_id,
                ),
                await fetch(f"SELECT {TAG_COLUMNS} FROM tags WHERE repo_id = $1", repo_id),
                await fetch(
                    "SELECT l.digest, b.size, l.created_at FROM repository_blobs l "
                    "JOIN blobs b ON b.digest = l.digest WHERE l.repo_id = $1",
                    repo_id,
                ),
                [
                    pin_record(row)
                    for row in await fetch(
                        f"SELECT {PIN_COLUMNS} FROM pins WHERE repository = ANY($1::text[]) "
                        "AND at >= $2",
                        collection.pinned_as(repository, hosts),
                        pins_since,
                    )
                ],
                await fetch(
                    f"SELECT {HISTORY_COLUMNS} FROM tag_events WHERE repository = $1 "
                    "AND at >= $2 AND action <> 'refused'",
                    repository,
                    history_since,
                ),
                await fetch(
                    f"SELECT {RUNNING_COLUMNS} FROM running_images WHERE repository = $1",
                    repository,
                ),
                await fetch(
                    "SELECT digest, last_pull FROM manifest_pulls WHERE repo_id = $1", repo_id
                ),
                await t.conn.fetchval("SELECT version FROM policy WHERE id = 1") or 0,
            )
            result = collection.checked(found, plan(found))
            if apply:
                await delete_tags(t, repo_id, collection.expired_events(result, self._clock()))
                manifests = [m.digest for m in result.manifests]
                await t.conn.execute(
                    "DELETE FROM manifest_references WHERE repo_id = $1 AND digest = ANY($2)",
                    repo_id,
                    manifests,
                )
                await t.conn.execute(
                    "DELETE FROM manifests WHERE repo_id = $1 AND digest = ANY($2)",
                    repo_id,
                    manifests,
                )
                await t.conn.execute(
                    "DELETE FROM manifest_pulls WHERE repo_id = $1 AND digest = ANY($2)",
                    repo_id,
                    manifests,
                )
                await t.conn.execute(
                    "DELETE FROM repository_blobs WHERE repo_id = $1 AND digest = ANY($2)",
                    repo_id,
                    [b.digest for b in result.blobs],
                )
            return result

        if not apply:
            return await self._transaction(sweep)
        # The policy's lock, shared: retention never removes a tag a policy change, committed
        # meanwhile, has made immutable (the planner checks the version it read).
        return await self._transaction(
            sweep, shared=(POLICY_LOCK,), exclusive=(lock_key("repository", repository),)
        )

    async def retire_blobs(self, now: float) -> list[BlobDeletion]:
        rows = await self._fetch(f"SELECT digest FROM blobs b WHERE {_UNLINKED}")
        retired: list[BlobDeletion] = []
        for batch in _batches([row[0] for row in rows]):

            async def tx(t: Transaction, batch: list[str] = batch) -> list[BlobDeletion]:
                await _lock_blobs(t, batch)
                where = f"b.digest = ANY($1::text[]) AND {_UNLINKED}"
                found = await t.conn.fetch(
                    "INSERT INTO blob_deletions (digest, size, since, reason) "
                    f"SELECT digest, size, $2, 'no repository holds it' FROM blobs b "
                    f"WHERE {where} ON CONFLICT (digest) DO NOTHING "
                    f"RETURNING {DELETION_COLUMNS}",
                    batch,
                    now,
                )
                await t.conn.execute(f"DELETE FROM blobs b WHERE {where}", batch)
                return [collection.deletion(row) for row in found]

            retired += await self._transaction(tx)
        return retired

    async def orphaned_blobs(
        self, stored: Sequence[tuple[str, int]], now: float, *, apply: bool = True
    ) -> list[BlobDeletion]:
        sizes = dict(stored)
        rows = await self._fetch(
            "SELECT u.d FROM unnest($1::text[]) AS u (d) "
            "WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = u.d) "
            "AND NOT EXISTS (SELECT 1 FROM blob_deletions WHERE digest = u.d)",
            list(sizes),
        )
        candidates = sorted(row[0] for row in rows)
        if not apply:
            return [BlobDeletion(d, sizes[d], now, collection.ORPHANED) for d in candidates]
        found: list[BlobDeletion] = []
        for batch in _batches(candidates):

            async def tx(t: Transaction, batch: list[str] = batch) -> list[BlobDeletion]:
                await _lock_blobs(t, batch)
                rows = await t.conn.fetch(
                    "INSERT INTO blob_deletions (digest, size, since, reason) "
                    "SELECT u.d, u.s, $3, $4 "
                    "FROM unnest($1::text[], $2::bigint[]) AS u (d, s) "
                    "WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = u.d) "
                    f"ON CONFLICT (digest) DO NOTHING RETURNING {DELETION_COLUMNS}",
                    batch,
                    [sizes[digest] for digest in batch],
                    now,
                    collection.ORPHANED,
                )
                return [collection.deletion(row) for row in rows]

            found += await self._transaction(tx)
        return found

    async def blob_deletions(self) -> list[BlobDeletion]:
        rows = await self._fetch(
            f"SELECT {DELETION_COLUMNS} FROM blob_deletions ORDER BY since, digest"
        )
        return [collection.deletion(row) for row in rows]

    async def start_deleting(
        self,
        digests: Sequence[str],
        before: float,
        now: float,
        margin: float,
        stale: float,
        owner: str = "",
        dead: Sequence[str] = (),
    ) -> list[BlobDeletion]:
        marked: list[BlobDeletion] = []
        for batch in _batches(digests):

            async def tx(t: Transaction, batch: list[str] = batch) -> list[BlobDeletion]:
                await _lock_blobs(t, batch)
                # Waits for uploads taking their lease to complete as one of these digests.
                await t.conn.execute(
                    "SELECT 1 FROM blob_deletions WHERE digest = ANY($1::text[]) FOR UPDATE",
                    batch,
                )
                rows = await t.conn.fetch(
                    "UPDATE blob_deletions d SET marked_at = $4, marked_by = $6 "
                    "WHERE digest = ANY($1::text[]) AND (marked_at < $5 "
                    "OR marked_by = ANY($7::text[]) OR ("
                    "marked_at IS NULL AND since < $2 "
                    "AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = d.digest) "
                    "AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.digest = d.digest "
                    f"AND u.lease_until > $3))) RETURNING {DELETION_COLUMNS}",
                    batch,
                    before,
                    now - margin,
                    now,
                    now - stale,
                    owner,
                    list(dead),
                )
                return [collection.deletion(row) for row in rows]

            marked += await self._transaction(tx)
        return marked

    async def finish_deleting(self, deleted: Sequence[BlobDeletion]) -> None:
        await self._change(
            "DELETE FROM blob_deletions d USING unnest($1::text[], $2::float8[]) AS u (g, m) "
            "WHERE d.digest = u.g AND d.marked_at = u.m",
            [d.digest for d in deleted],
            [d.marked_at for d in deleted],
        )

    async def upload_ids(self) -> set[str]:
        return {row[0] for row in await self._fetch("SELECT id FROM uploads")}

    async def replace_inventory(self, images: Sequence[RunningImage], at: float) -> None:
        async def tx(t: Transaction) -> None:
            await t.conn.execute("DELETE FROM running_images")
            await t.conn.executemany(
                f"INSERT INTO running_images ({RUNNING_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [collection.running_values(image) for image in images],
            )
            await t.conn.execute(
                "INSERT INTO inventory (id, taken_at) VALUES (1, $1) "
                "ON CONFLICT (id) DO UPDATE SET taken_at = excluded.taken_at",
                at,
            )

        await self._transaction(tx, exclusive=(lock_key("inventory"),))

    async def inventory(self) -> tuple[float | None, list[RunningImage]]:
        taken = await self._fetchrow("SELECT taken_at FROM inventory")
        rows = await self._fetch(f"SELECT {RUNNING_COLUMNS} FROM running_images")
        return (None if taken is None else float(taken[0])), [RunningImage(*r) for r in rows]
