"""Garbage collection in SQLite (``CollectionStore``) and the cluster inventory
(``InventoryStore``).

Every change runs on the writer thread, one transaction at a time in this process and under
the database's write lock across processes, so a repository's contents are read, judged and
swept with no push, mount or tag change in between, and the steps of a blob's deletion
never interleave with an upload recording the blob. A dry run reads in one read
transaction on the reader connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from moorage.meta import collection
from moorage.meta.collection import (
    DELETION_COLUMNS,
    HISTORY_COLUMNS,
    MANIFEST_COLUMNS,
    REFERENCE_COLUMNS,
    RUNNING_COLUMNS,
    TAG_COLUMNS,
)
from moorage.meta.protocols import Planner
from moorage.meta.rows import PIN_COLUMNS, pin_record
from moorage.meta.sqlite import history
from moorage.meta.sqlite.database import Database, existing_repo
from moorage.meta.sqlite.policy import stored_policy_version
from moorage.model import BlobDeletion, RepositorySweep, RunningImage

T = TypeVar("T")


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


_UNLINKED = "NOT EXISTS (SELECT 1 FROM repository_blobs l WHERE l.digest = b.digest)"
#: Blob records retired in one write transaction.
RETIRE_BATCH = 500


def _retire(digests: Sequence[str], now: float, conn: sqlite3.Connection) -> list[BlobDeletion]:
    """Turn the records of those of ``digests`` that no repository links into deletions."""
    among = f"b.digest IN ({_placeholders(len(digests))}) AND {_UNLINKED}"
    rows = conn.execute(
        "INSERT INTO blob_deletions (digest, size, since, reason) "
        f"SELECT digest, size, ?, 'no repository holds it' FROM blobs b WHERE {among} "
        f"ON CONFLICT (digest) DO NOTHING RETURNING {DELETION_COLUMNS}",
        (now, *digests),
    ).fetchall()
    conn.execute(f"DELETE FROM blobs AS b WHERE {among}", tuple(digests))
    return [collection.deletion(row) for row in rows]


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
        def sweep(conn: sqlite3.Connection) -> RepositorySweep:
            repo_id = existing_repo(conn, repository)
            if repo_id is None:
                return RepositorySweep(repository)
            pinned_as = collection.pinned_as(repository, hosts)
            found = collection.contents(
                repository,
                conn.execute(
                    f"SELECT {MANIFEST_COLUMNS} FROM manifests WHERE repo_id = ?", (repo_id,)
                ),
                conn.execute(
                    f"SELECT {REFERENCE_COLUMNS} FROM manifest_references WHERE repo_id = ?",
                    (repo_id,),
                ),
                conn.execute(f"SELECT {TAG_COLUMNS} FROM tags WHERE repo_id = ?", (repo_id,)),
                conn.execute(
                    "SELECT l.digest, b.size, l.created_at FROM repository_blobs l "
                    "JOIN blobs b ON b.digest = l.digest WHERE l.repo_id = ?",
                    (repo_id,),
                ),
                [
                    pin_record(row)
                    for row in conn.execute(
                        f"SELECT {PIN_COLUMNS} FROM pins WHERE repository IN "
                        f"({_placeholders(len(pinned_as))}) AND at >= ?",
                        (*pinned_as, pins_since),
                    )
                ],
                conn.execute(
                    f"SELECT {HISTORY_COLUMNS} FROM tag_events WHERE repository = ? "
                    "AND at >= ? AND action != 'refused'",
                    (repository, history_since),
                ),
                conn.execute(
                    f"SELECT {RUNNING_COLUMNS} FROM running_images WHERE repository = ?",
                    (repository,),
                ),
                conn.execute(
                    "SELECT digest, last_pull FROM manifest_pulls WHERE repo_id = ?", (repo_id,)
                ),
                stored_policy_version(conn),
            )
            result = collection.checked(found, plan(found))
            if apply:
                history.delete_tags(conn, repo_id, collection.expired_events(result, self._clock()))
                for manifest in result.manifests:
                    history.save_digest_head(conn, repo_id, repository, manifest.digest)
                gone = [(repo_id, m.digest) for m in result.manifests]
                conn.executemany(
                    "DELETE FROM manifest_references WHERE repo_id = ? AND digest = ?", gone
                )
                conn.executemany("DELETE FROM manifests WHERE repo_id = ? AND digest = ?", gone)
                conn.executemany(
                    "DELETE FROM manifest_pulls WHERE repo_id = ? AND digest = ?", gone
                )
                conn.executemany(
                    "DELETE FROM repository_blobs WHERE repo_id = ? AND digest = ?",
                    [(repo_id, b.digest) for b in result.blobs],
                )
            return result

        if apply:
            return await self._write(sweep)
        return self._read(sweep)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction on the reader (a consistent snapshot)."""
        self._reader.execute("BEGIN")
        try:
            return fn(self._reader)
        finally:
            self._reader.execute("COMMIT")

    async def retire_blobs(self, now: float) -> list[BlobDeletion]:
        # Found on the reader, then retired in batches that check again: one transaction
        # over every blob would hold the write lock (and every push) for all of them.
        candidates = self._read(
            lambda conn: [
                row[0] for row in conn.execute(f"SELECT digest FROM blobs b WHERE {_UNLINKED}")
            ]
        )
        retired: list[BlobDeletion] = []
        for start in range(0, len(candidates), RETIRE_BATCH):
            batch = candidates[start : start + RETIRE_BATCH]
            retired += await self._write(partial(_retire, batch, now))
        return retired

    async def orphaned_blobs(
        self, stored: Sequence[tuple[str, int]], now: float, *, apply: bool = True
    ) -> list[BlobDeletion]:
        def unknown(
            conn: sqlite3.Connection, found: Sequence[tuple[str, int]]
        ) -> list[tuple[str, int]]:
            return [
                (digest, size)
                for digest, size in found
                if not conn.execute(
                    "SELECT 1 FROM blobs WHERE digest = ? "
                    "UNION ALL SELECT 1 FROM blob_deletions WHERE digest = ?",
                    (digest, digest),
                ).fetchone()
            ]

        candidates = self._read(lambda conn: unknown(conn, stored))
        if not apply:
            return [BlobDeletion(d, size, now, collection.ORPHANED) for d, size in candidates]

        def tx(conn: sqlite3.Connection) -> list[BlobDeletion]:
            found = []
            for digest, size in unknown(conn, candidates):  # again, in the transaction
                row = conn.execute(
                    "INSERT INTO blob_deletions (digest, size, since, reason) "
                    f"VALUES (?, ?, ?, ?) RETURNING {DELETION_COLUMNS}",
                    (digest, size, now, collection.ORPHANED),
                ).fetchone()
                found.append(collection.deletion(row))
            return found

        return await self._write(tx) if candidates else []

    async def blob_deletions(self) -> list[BlobDeletion]:
        rows = self._reader.execute(
            f"SELECT {DELETION_COLUMNS} FROM blob_deletions ORDER BY since, digest"
        ).fetchall()
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
        def tx(conn: sqlite3.Connection) -> list[BlobDeletion]:
            marked = []
            for digest in digests:
                row = conn.execute(
                    "UPDATE blob_deletions SET marked_at = ?, marked_by = ? WHERE digest = ? AND ("
                    f"marked_at < ? OR marked_by IN ({_placeholders(len(dead))}) OR ("
                    "marked_at IS NULL AND since < ? "
                    "AND NOT EXISTS (SELECT 1 FROM blobs WHERE digest = ?) "
                    "AND NOT EXISTS (SELECT 1 FROM uploads WHERE digest = ? "
                    f"AND lease_until > ?))) RETURNING {DELETION_COLUMNS}",
                    (now, owner, digest, now - stale, *dead, before, digest, digest, now - margin),
                ).fetchone()
                if row is not None:
                    marked.append(collection.deletion(row))
            return marked

        return await self._write(tx)

    async def finish_deleting(self, deleted: Sequence[BlobDeletion]) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM blob_deletions WHERE digest = ? AND marked_at = ?",
                [(d.digest, d.marked_at) for d in deleted],
            )

        await self._write(tx)

    async def upload_ids(self) -> set[str]:
        return {row[0] for row in self._reader.execute("SELECT id FROM uploads")}

    async def replace_inventory(self, images: Sequence[RunningImage], at: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM running_images")
            conn.executemany(
                f"INSERT INTO running_images ({RUNNING_COLUMNS}) VALUES ({_placeholders(8)})",
                [collection.running_values(image) for image in images],
            )
            conn.execute(
                "INSERT INTO inventory (id, taken_at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET taken_at = excluded.taken_at",
                (at,),
            )

        await self._write(tx)

    async def inventory(self) -> tuple[float | None, list[RunningImage]]:
        row = self._reader.execute("SELECT taken_at FROM inventory").fetchone()
        images = [
            RunningImage(*r)
            for r in self._reader.execute(f"SELECT {RUNNING_COLUMNS} FROM running_images")
        ]
        return (None if row is None else float(row[0])), images
