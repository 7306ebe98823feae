"""SQLite's side of the guarded tag changes (``moorage.meta.tag_changes``).

An operation runs on the writer thread, as one write (its own savepoint of a group commit):
``GuardedChanges._guarded`` makes a ``SQLiteTagPort`` on the transaction's connection and
drives the core's coroutine to its end there (``tag_changes.drive``). The port's methods do
plain ``sqlite3`` work and never suspend. Writers are serialized (one writer thread per
process, and a file lock between processes), so what a read finds holds until the commit: no
policy change or other tag write can come between.

History is written as chains (``history.py``): each event is one appended row, made the head
of its tag (in the tag's row) and, when it points the tag at a manifest, of that manifest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from moorage.meta.errors import TagRefused
from moorage.meta.rows import MANIFEST_FIELDS, manifest_values
from moorage.meta.sqlite import history
from moorage.meta.sqlite.database import Clock, Database, ensure_repo, existing_repo
from moorage.meta.sqlite.policy import stored_policy_version
from moorage.meta.tag_changes import (
    DeletionState,
    Event,
    PushState,
    TagState,
    drive,
    unless_refused,
)
from moorage.model import ManifestRecord, Reference

T = TypeVar("T")

_INSERT_MANIFEST = (
    f"INSERT INTO manifests ({MANIFEST_FIELDS}, last_event) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
    "SET last_event = excluded.last_event WHERE excluded.last_event IS NOT NULL"
)
_POINT_TAG = (
    "INSERT INTO tags (repo_id, name, digest, updated_at, last_event) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (repo_id, name) DO UPDATE SET "
    "digest = excluded.digest, updated_at = excluded.updated_at, "
    "last_event = excluded.last_event"
)
_MANIFEST_HEAD = "UPDATE manifests SET last_event = ? WHERE repo_id = ? AND digest = ?"
# Tags on a manifest, and on indexes that list it: deleting it breaks those too.
_MANIFEST_AFFECTS = (
    "SELECT name, digest FROM tags WHERE repo_id = ?1 AND (digest = ?2 OR digest IN "
    "(SELECT digest FROM manifest_references WHERE repo_id = ?1 AND kind = 'manifest' "
    "AND target = ?2)) ORDER BY name"
)
# Tags on manifests using a blob, and on indexes listing such manifests.
_BLOB_AFFECTS = (
    "WITH users AS (SELECT digest FROM manifest_references WHERE repo_id = ?1 "
    "AND kind = 'blob' AND target = ?2) SELECT name, digest FROM tags "
    "WHERE repo_id = ?1 AND (digest IN users OR digest IN (SELECT digest "
    "FROM manifest_references WHERE repo_id = ?1 AND kind = 'manifest' "
    "AND target IN users)) ORDER BY name"
)


def _has(conn: sqlite3.Connection, repo_id: int, ref: Reference) -> bool:
    table = "repository_blobs" if ref.kind == "blob" else "manifests"
    row = conn.execute(
        f"SELECT 1 FROM {table} WHERE repo_id = ? AND digest = ?", (repo_id, ref.digest)
    ).fetchone()
    return row is not None


def _tag_digest(conn: sqlite3.Connection, repo_id: int, tag: str) -> str | None:
    row = conn.execute(
        "SELECT digest FROM tags WHERE repo_id = ? AND name = ?", (repo_id, tag)
    ).fetchone()
    return None if row is None else str(row[0])


class SQLiteTagPort:
    """The port of one operation, on the writer's connection (see the module docstring)."""

    __slots__ = ("_clock", "_conn", "_repo_id")

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._repo_id: int | None = None

    def now(self) -> float:
        return self._clock()

    @property
    def repo_id(self) -> int:
        """The repository a read found (writes follow a read that found it)."""
        assert self._repo_id is not None
        return self._repo_id

    async def read_push(
        self,
        repository: str,
        tags: Sequence[str],
        references: Sequence[Reference],
        policy: bool = True,
    ) -> PushState:
        conn = self._conn
        version = stored_policy_version(conn) if policy else 0
        repo_id = self._repo_id = ensure_repo(conn, repository, self._clock())
        missing = [ref for ref in references if not _has(conn, repo_id, ref)]
        current = [_tag_digest(conn, repo_id, tag) for tag in tags]
        return PushState(version, current, missing)

    async def write_push(
        self, repository: str, manifest: ManifestRecord, events: Sequence[Event], now: float
    ) -> None:
        conn, repo_id, digest = self._conn, self.repo_id, manifest.digest
        # The first change's event goes in with the manifest's row, as the head of the
        # digest's chain; each further one is linked to the one before through that row.
        ids = [history.record(conn, repo_id, events[0])] if events else []
        values = (repo_id, *manifest_values(manifest), now, ids[0] if ids else None)
        conn.execute(_INSERT_MANIFEST, values)
        conn.executemany(
            "INSERT INTO manifest_references (repo_id, digest, kind, target) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(repo_id, digest, r.kind, r.digest) for r in manifest.references],
        )
        for event in events[1:]:
            ids.append(history.record(conn, repo_id, event))
            conn.execute(_MANIFEST_HEAD, (ids[-1], repo_id, digest))
        for event, event_id in zip(events, ids, strict=True):
            conn.execute(_POINT_TAG, (repo_id, event.tag, digest, event.at, event_id))

    async def read_tag(self, repository: str, tag: str, manifest: str | None = None) -> TagState:
        conn = self._conn
        version = stored_policy_version(conn)
        repo_id = self._repo_id = existing_repo(conn, repository)
        if repo_id is None:
            return TagState(version, None)
        found = manifest is not None and _has(conn, repo_id, Reference("manifest", manifest))
        return TagState(version, _tag_digest(conn, repo_id, tag), found)

    async def delete_tag(self, event: Event) -> None:
        history.delete_tags(self._conn, self.repo_id, [event])

    async def point_tag(self, event: Event) -> None:
        conn, repo_id = self._conn, self.repo_id
        event_id = history.record(conn, repo_id, event)
        conn.execute(_POINT_TAG, (repo_id, event.tag, event.new_digest, event.at, event_id))
        conn.execute(_MANIFEST_HEAD, (event_id, repo_id, event.new_digest))

    async def read_manifest_deletion(self, repository: str, digest: str) -> DeletionState:
        conn = self._conn
        version = stored_policy_version(conn)
        repo_id = self._repo_id = existing_repo(conn, repository)
        if repo_id is None:
            return DeletionState(version, False)
        affected = conn.execute(_MANIFEST_AFFECTS, (repo_id, digest)).fetchall()
        return DeletionState(version, _has(conn, repo_id, Reference("manifest", digest)), affected)

    async def delete_manifest(self, repository: str, digest: str, events: Sequence[Event]) -> None:
        conn, repo_id = self._conn, self.repo_id
        history.delete_tags(conn, repo_id, events)
        history.save_digest_head(conn, repo_id, repository, digest)
        args = (repo_id, digest)
        conn.execute("DELETE FROM manifest_references WHERE repo_id = ? AND digest = ?", args)
        conn.execute("DELETE FROM manifests WHERE repo_id = ? AND digest = ?", args)
        conn.execute("DELETE FROM manifest_pulls WHERE repo_id = ? AND digest = ?", args)

    async def read_blob_unlink(self, repository: str, digest: str, affected: bool) -> DeletionState:
        conn = self._conn
        version = stored_policy_version(conn)
        repo_id = self._repo_id = existing_repo(conn, repository)
        if repo_id is None or not _has(conn, repo_id, Reference("blob", digest)):
            return DeletionState(version, False)
        tags = conn.execute(_BLOB_AFFECTS, (repo_id, digest)).fetchall() if affected else []
        return DeletionState(version, True, tags)

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        cursor = self._conn.execute(
            "DELETE FROM repository_blobs WHERE repo_id = ? AND digest = ?", (self.repo_id, digest)
        )
        return cursor.rowcount > 0

    async def record(self, events: Sequence[Event]) -> None:
        conn, repo_id = self._conn, self.repo_id
        for event in events:
            event_id = history.record(conn, repo_id, event)
            history.advance_tag_head(conn, repo_id, event.repository, event.tag, event_id)


class GuardedChanges(Database):
    async def _guarded(
        self, operation: Callable[[SQLiteTagPort], Coroutine[Any, Any, T | TagRefused]]
    ) -> T:
        """Run a guarded change as one write, and raise its refusals once they are committed."""
        clock = self._clock

        def tx(conn: sqlite3.Connection) -> T | TagRefused:
            return drive(operation(SQLiteTagPort(conn, clock)))

        return unless_refused(await self._write(tx))
