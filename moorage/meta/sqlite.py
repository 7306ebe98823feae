"""SQLite metadata backend: the embedded default.

Several worker processes share one database file in WAL mode. Reads run inline on the event
loop (indexed lookups take microseconds and WAL readers never wait for writers); every write
runs on one thread per process that commits queued writes together (``sqlite_writer``), so
waiting for another process's write lock or for an fsync never stalls the loop, and
concurrent pushes share an fsync. ``synchronous=FULL``: a push that was acknowledged survives
power loss.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from moorage.meta import sqlite_history as history
from moorage.meta.base import (
    ManifestNotFound,
    MissingReferences,
    PolicyChanged,
    TagRefused,
    UploadBusy,
    UploadNotFound,
    UploadOffsetMismatch,
)
from moorage.meta.sqlite_hint import VersionHint
from moorage.meta.sqlite_schema import migrate
from moorage.meta.sqlite_writer import GroupCommitWriter
from moorage.model import (
    REGISTRY_ACTOR,
    Actor,
    ManifestRecord,
    PinRecord,
    PolicyChange,
    PolicyRecord,
    PutResult,
    Reference,
    ReferrerRecord,
    Refusal,
    TagAction,
    TagEvent,
    TagGuard,
    Upload,
    push_tags,
)

T = TypeVar("T")

_MANIFEST_COLUMNS = "m.digest, m.media_type, m.payload, m.artifact_type, m.subject, m.annotations"


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _manifest(row: tuple[str, str, bytes, str | None, str | None, str | None]) -> ManifestRecord:
    return ManifestRecord(
        digest=row[0],
        media_type=row[1],
        payload=bytes(row[2]),
        artifact_type=row[3],
        subject=row[4],
        annotations=row[5],
    )


def _upload(row: tuple[str, str, int, bytes | None, float, float, float, str]) -> Upload:
    return Upload(*row)


def _unless_refused(result: T | Refusal | TagRefused) -> T:
    """Results of transactions that may end in recorded refusals: raise them after commit."""
    if isinstance(result, Refusal):
        raise TagRefused(result)
    if isinstance(result, TagRefused):
        raise result
    return result


_PIN_FIELDS = (
    "at, namespace, kind, name, container_kind, container, image, repository, tag, digest, "
    "source, request_uid, user"
)
_PIN_VALUES = ", ".join("?" * len(_PIN_FIELDS.split(",")))

_UPLOAD_COLUMNS = (
    "id, repository, offset, hash_state, created_at, updated_at, lease_until, lease_owner"
)


def _stored_policy_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM policy WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def _check_policy(conn: sqlite3.Connection, guard: TagGuard | None) -> None:
    """PolicyChanged unless ``guard`` enforces the policy stored now (read in the write
    transaction: writers are serialized, so no policy change can come between)."""
    if guard is None or guard.policy_version is None:
        return
    stored = _stored_policy_version(conn)
    if stored != guard.policy_version:
        raise PolicyChanged(guard.policy_version, stored)


class SQLiteMetadata:
    def __init__(self, path: str | Path, *, owned_directory: Path | None = None) -> None:
        self._owned_directory = owned_directory
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = connect(self.path)
        migrate(writer)
        self._reader = connect(self.path)
        self._writer = GroupCommitWriter(writer, self.path.with_name(self.path.name + ".lock"))
        self._repo_ids: dict[str, int] = {}
        self._policy_hint = VersionHint(self.path.with_name(self.path.name + ".policy"))
        self._policy_version: int | None = None  # read from the database, hint agreeing

    @classmethod
    def temporary(cls) -> SQLiteMetadata:
        """A database in a new temporary directory, removed on close (throwaway registries)."""
        directory = Path(tempfile.mkdtemp(prefix="moorage-meta-"))
        return cls(directory / "moorage.db", owned_directory=directory)

    async def connect(self) -> None:
        return None  # the database was opened and migrated by the constructor

    async def close(self) -> None:
        self._writer.close()
        self._reader.close()
        self._policy_hint.close()
        if self._owned_directory is not None:
            shutil.rmtree(self._owned_directory, ignore_errors=True)

    # -- plumbing -----------------------------------------------------------------------------
    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` atomically (in its own savepoint of a group commit); durable on return."""
        return await self._writer.submit(fn)

    async def _change(self, sql: str, args: tuple[object, ...]) -> bool:
        """Run one statement as its own transaction; True if it changed a row."""

        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, args).rowcount > 0

        return await self._write(tx)

    def _repo_id(self, repository: str) -> int | None:
        """Id of an existing repository (read side). Ids never change, so hits are cached."""
        repo_id = self._repo_ids.get(repository)
        if repo_id is None:
            repo_id = self._existing_repo(self._reader, repository)
            if repo_id is None:
                return None
            self._repo_ids[repository] = repo_id
        return repo_id

    @staticmethod
    def _existing_repo(conn: sqlite3.Connection, repository: str) -> int | None:
        """Id of the repository as the transaction sees it, or None."""
        row = conn.execute("SELECT id FROM repositories WHERE name = ?", (repository,)).fetchone()
        return None if row is None else int(row[0])

    @classmethod
    def _ensure_repo(cls, conn: sqlite3.Connection, repository: str) -> int:
        repo_id = cls._existing_repo(conn, repository)
        if repo_id is not None:
            return repo_id
        cur = conn.execute(
            "INSERT INTO repositories (name, created_at) VALUES (?, ?)", (repository, time.time())
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    # -- blobs --------------------------------------------------------------------------------
    async def add_blob(self, repository: str, digest: str, size: int) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            repo_id = self._ensure_repo(conn, repository)
            now = time.time()
            conn.execute(
                "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (digest) DO NOTHING",
                (digest, size, now),
            )
            conn.execute(
                "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (repo_id, digest, now),
            )

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
            repo_id = self._ensure_repo(conn, repository)
            conn.execute(
                "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (repo_id, digest, time.time()),
            )
            return int(row[0])

        return await self._write(tx)

    async def unlink_blob(
        self,
        repository: str,
        digest: str,
        actor: Actor = REGISTRY_ACTOR,
        guard: TagGuard | None = None,
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool | Refusal:
            _check_policy(conn, guard)
            repo_id = self._existing_repo(conn, repository)
            if repo_id is None:
                return False
            linked = "SELECT 1 FROM repository_blobs WHERE repo_id = ? AND digest = ?"
            if guard is not None and conn.execute(linked, (repo_id, digest)).fetchone():
                # Tags on manifests using the blob, and on indexes listing such manifests.
                affected = conn.execute(
                    "WITH users AS (SELECT digest FROM manifest_references WHERE repo_id = ?1 "
                    "AND kind = 'blob' AND target = ?2) SELECT name, digest FROM tags "
                    "WHERE repo_id = ?1 AND (digest IN users OR digest IN (SELECT digest "
                    "FROM manifest_references WHERE repo_id = ?1 AND kind = 'manifest' "
                    "AND target IN users)) ORDER BY name",
                    (repo_id, digest),
                ).fetchall()
                refusal = self._refuse_deletion(conn, repo_id, affected, guard, actor, time.time())
                if refusal is not None:
                    return refusal
            return (
                conn.execute(
                    "DELETE FROM repository_blobs WHERE repo_id = ? AND digest = ?",
                    (repo_id, digest),
                ).rowcount
                > 0
            )

        return _unless_refused(await self._write(tx))

    # -- manifests and tags -------------------------------------------------------------------
    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        tags: Sequence[str],
        actor: Actor,
        guard: TagGuard | None = None,
    ) -> PutResult:
        names = push_tags(tags)
        digest = manifest.digest

        def tx(conn: sqlite3.Connection) -> PutResult | TagRefused:
            _check_policy(conn, guard)
            repo_id = self._ensure_repo(conn, repository)
            missing = [r for r in manifest.references if not self._has(conn, repo_id, r)]
            if missing:
                raise MissingReferences(missing)
            now = time.time()
            previous = {tag: self._tag_digest(conn, repo_id, tag) for tag in names}
            if guard is not None:
                refusals = [
                    refusal
                    for tag, current in previous.items()
                    if (refusal := guard(tag, current, digest)) is not None
                ]
                if refusals:
                    for refusal in refusals:
                        self._refused(conn, repo_id, refusal, actor, now)
                    return TagRefused(*refusals)

            def record(tag: str, current: str | None) -> int:
                action: TagAction = "created" if current is None else "moved"
                return history.record(
                    conn, repo_id, repository, tag, action, current, digest, actor, now
                )

            changes = [(tag, current) for tag, current in previous.items() if current != digest]
            # The first change's event goes in with the manifest's row, as the head of the
            # digest's chain; each further one is linked to the one before through that row.
            events = [record(*changes[0])] if changes else []
            conn.execute(
                "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, "
                "annotations, size, payload, created_at, last_event) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET last_event = excluded.last_event WHERE excluded.last_event IS NOT NULL",
                (
                    repo_id,
                    manifest.digest,
                    manifest.media_type,
                    manifest.artifact_type,
                    manifest.subject,
                    manifest.annotations,
                    manifest.size,
                    manifest.payload,
                    now,
                    events[0] if events else None,
                ),
            )
            conn.executemany(
                "INSERT INTO manifest_references (repo_id, digest, kind, target) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(repo_id, manifest.digest, r.kind, r.digest) for r in manifest.references],
            )
            for tag, current in changes[1:]:
                events.append(record(tag, current))
                conn.execute(
                    "UPDATE manifests SET last_event = ? WHERE repo_id = ? AND digest = ?",
                    (events[-1], repo_id, digest),
                )
            for (tag, _), event in zip(changes, events, strict=True):
                self._point_tag(conn, repo_id, tag, digest, now, event)
            return PutResult(previous)

        return _unless_refused(await self._write(tx))

    @staticmethod
    def _tag_digest(conn: sqlite3.Connection, repo_id: int, tag: str) -> str | None:
        row = conn.execute(
            "SELECT digest FROM tags WHERE repo_id = ? AND name = ?", (repo_id, tag)
        ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _point_tag(
        conn: sqlite3.Connection, repo_id: int, tag: str, digest: str, now: float, event: int
    ) -> None:
        """Point the tag at ``digest``; ``event``, the change's history event, is its head."""
        conn.execute(
            "INSERT INTO tags (repo_id, name, digest, updated_at, last_event) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (repo_id, name) DO UPDATE SET "
            "digest = excluded.digest, updated_at = excluded.updated_at, "
            "last_event = excluded.last_event",
            (repo_id, tag, digest, now, event),
        )

    @staticmethod
    def _refused(
        conn: sqlite3.Connection, repo_id: int, refusal: Refusal, actor: Actor, now: float
    ) -> None:
        repository, tag = refusal.repository, refusal.tag
        event = history.record(
            conn,
            repo_id,
            repository,
            tag,
            "refused",
            refusal.current_digest,
            refusal.attempted_digest,
            actor,
            now,
            refusal.rule,
            refusal.message,
        )
        history.advance_tag_head(conn, repo_id, repository, tag, event)

    @classmethod
    def _refuse_deletion(
        cls,
        conn: sqlite3.Connection,
        repo_id: int,
        affected: list[tuple[str, str]],
        guard: TagGuard,
        actor: Actor,
        now: float,
    ) -> Refusal | None:
        """Ask the guard about each (tag, digest it holds) a deletion would break; record and
        return the first refusal."""
        for tag, tagged in affected:
            refusal = guard(tag, tagged, None)
            if refusal is not None:
                cls._refused(conn, repo_id, refusal, actor, now)
                return refusal
        return None

    @staticmethod
    def _deleted(
        conn: sqlite3.Connection,
        repo_id: int,
        repository: str,
        tags: list[tuple[str, str]],
        actor: Actor,
        now: float,
    ) -> None:
        """Delete each (tag, digest it held), recording it; the tag's history goes on."""
        for tag, digest in tags:
            event = history.record(
                conn, repo_id, repository, tag, "deleted", digest, None, actor, now
            )
            conn.execute("DELETE FROM tags WHERE repo_id = ? AND name = ?", (repo_id, tag))
            history.advance_tag_head(conn, repo_id, repository, tag, event)

    @staticmethod
    def _has(conn: sqlite3.Connection, repo_id: int, ref: Reference) -> bool:
        table = "repository_blobs" if ref.kind == "blob" else "manifests"
        row = conn.execute(
            f"SELECT 1 FROM {table} WHERE repo_id = ? AND digest = ?", (repo_id, ref.digest)
        ).fetchone()
        return row is not None

    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return None
        row = self._reader.execute(
            f"SELECT {_MANIFEST_COLUMNS} FROM manifests m WHERE m.repo_id = ? AND m.digest = ?",
            (repo_id, digest),
        ).fetchone()
        return None if row is None else _manifest(row)

    async def resolve_tag(self, repository: str, tag: str) -> ManifestRecord | None:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return None
        row = self._reader.execute(
            f"SELECT {_MANIFEST_COLUMNS} FROM tags t JOIN manifests m "
            "ON m.repo_id = t.repo_id AND m.digest = t.digest WHERE t.repo_id = ? AND t.name = ?",
            (repo_id, tag),
        ).fetchone()
        return None if row is None else _manifest(row)

    async def delete_manifest(
        self, repository: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool | Refusal:
            _check_policy(conn, guard)
            repo_id = self._existing_repo(conn, repository)
            if repo_id is None:
                return False
            now = time.time()
            # Tags on the manifest, and on indexes that list it: deleting it breaks those too.
            affected = conn.execute(
                "SELECT name, digest FROM tags WHERE repo_id = ? AND (digest = ? OR digest IN "
                "(SELECT digest FROM manifest_references WHERE repo_id = ? AND kind = 'manifest' "
                "AND target = ?)) ORDER BY name",
                (repo_id, digest, repo_id, digest),
            ).fetchall()
            if guard is not None:
                refusal = self._refuse_deletion(conn, repo_id, affected, guard, actor, now)
                if refusal is not None:
                    return refusal
            args = (repo_id, digest)
            if not conn.execute(
                "SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?", args
            ).fetchone():
                return False
            tags = [(tag, tagged) for tag, tagged in affected if tagged == digest]
            self._deleted(conn, repo_id, repository, tags, actor, now)
            history.save_digest_head(conn, repo_id, repository, digest)
            conn.execute("DELETE FROM manifest_references WHERE repo_id = ? AND digest = ?", args)
            conn.execute("DELETE FROM manifests WHERE repo_id = ? AND digest = ?", args)
            return True

        return _unless_refused(await self._write(tx))

    async def delete_tag(
        self, repository: str, tag: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool | Refusal:
            _check_policy(conn, guard)
            repo_id = self._existing_repo(conn, repository)
            current = None if repo_id is None else self._tag_digest(conn, repo_id, tag)
            if repo_id is None or current is None:
                return False
            now = time.time()
            refusal = None if guard is None else guard(tag, current, None)
            if refusal is not None:
                self._refused(conn, repo_id, refusal, actor, now)
                return refusal
            self._deleted(conn, repo_id, repository, [(tag, current)], actor, now)
            return True

        return _unless_refused(await self._write(tx))

    async def restore_tag(
        self, repository: str, tag: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> str | None:
        def tx(conn: sqlite3.Connection) -> tuple[str | None] | Refusal:
            _check_policy(conn, guard)
            row = conn.execute(
                "SELECT m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id "
                "WHERE r.name = ? AND m.digest = ?",
                (repository, digest),
            ).fetchone()
            if row is None:
                raise ManifestNotFound(f"{repository}@{digest}")
            repo_id, now = row[0], time.time()
            current = self._tag_digest(conn, repo_id, tag)
            refusal = None if guard is None else guard(tag, current, digest)
            if refusal is not None:
                self._refused(conn, repo_id, refusal, actor, now)
                return refusal
            if current != digest:
                event = history.record(
                    conn, repo_id, repository, tag, "restored", current, digest, actor, now
                )
                self._point_tag(conn, repo_id, tag, digest, now, event)
                conn.execute(
                    "UPDATE manifests SET last_event = ? WHERE repo_id = ? AND digest = ?",
                    (event, repo_id, digest),
                )
            return (current,)

        return _unless_refused(await self._write(tx))[0]

    async def repository_exists(self, repository: str) -> bool:
        return self._repo_id(repository) is not None

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return []
        rows = self._reader.execute(
            "SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?",
            (repo_id, last or "", -1 if limit is None else limit),
        ).fetchall()
        return [r[0] for r in rows]

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        rows = self._reader.execute(
            "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
            (last or "", -1 if limit is None else limit),
        ).fetchall()
        return [r[0] for r in rows]

    async def referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[ReferrerRecord]:
        repo_id = self._repo_id(repository)
        if repo_id is None:
            return []
        sql = (
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests "
            "WHERE repo_id = ? AND subject = ?"
        )
        args: tuple[object, ...] = (repo_id, subject)
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            args += (artifact_type,)
        rows = self._reader.execute(sql + " ORDER BY digest", args).fetchall()
        return [ReferrerRecord(*row) for row in rows]

    # -- tag history (sqlite_history) ---------------------------------------------------------
    async def tag_history(
        self, repository: str, tag: str, limit: int | None, before: int | None
    ) -> list[TagEvent]:
        repo_id = self._repo_id(repository)
        return history.tag_events(self._reader, repo_id, repository, tag, limit, before)

    async def tag_at(self, repository: str, tag: str, before: float) -> TagEvent | None:
        return history.tag_at(self._reader, self._repo_id(repository), repository, tag, before)

    async def digest_events(self, digest: str) -> list[TagEvent]:
        return history.digest_events(self._reader, digest)

    # -- tag policy ---------------------------------------------------------------------------
    async def policy_version(self) -> int:
        hint = self._policy_hint.read()
        if hint == self._policy_version:
            return hint  # no change since it was read (sqlite_hint)
        version = _stored_policy_version(self._reader)
        if version == hint:
            self._policy_version = version
        return version

    async def get_policy(self) -> PolicyRecord | None:
        row = self._reader.execute(
            "SELECT document, version, source, source_hash, updated_at, user, address "
            "FROM policy WHERE id = 1"
        ).fetchone()
        return None if row is None else PolicyRecord(*row)

    async def set_policy(
        self, document: str, actor: Actor, source: str, source_hash: str | None
    ) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT document, version FROM policy WHERE id = 1").fetchone()
            old, version = (None, 0) if row is None else (row[0], int(row[1]))
            now = time.time()
            conn.execute(
                "INSERT INTO policy (id, document, version, source, source_hash, updated_at, "
                "user, address) VALUES (1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "document = excluded.document, version = excluded.version, "
                "source = excluded.source, source_hash = excluded.source_hash, "
                "updated_at = excluded.updated_at, user = excluded.user, "
                "address = excluded.address",
                (document, version + 1, source, source_hash, now, actor.user, actor.address),
            )
            conn.execute(
                "INSERT INTO policy_changes (at, user, address, request_id, source, "
                "old_document, new_document) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, actor.user, actor.address, actor.request_id, source, old, document),
            )
            self._policy_hint.publish(version + 1)  # before the commit (sqlite_hint)
            return version + 1

        return await self._write(tx)

    async def policy_changes(self, limit: int | None) -> list[PolicyChange]:
        rows = self._reader.execute(
            "SELECT id, at, user, address, request_id, source, old_document, new_document "
            "FROM policy_changes ORDER BY id DESC LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [PolicyChange(*row) for row in rows]

    # -- admission pins ------------------------------------------------------------------------
    async def record_pins(self, pins: Sequence[PinRecord]) -> None:
        rows = [
            (
                p.at, p.namespace, p.kind, p.name, p.container_kind, p.container, p.image,
                p.repository, p.tag, p.digest, p.source, p.request_uid, p.user,
            )
            for p in pins
        ]  # fmt: skip

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(f"INSERT INTO pins ({_PIN_FIELDS}) VALUES ({_PIN_VALUES})", rows)

        await self._write(tx)

    async def list_pins(
        self,
        namespace: str | None,
        repository: str | None,
        tag: str | None,
        limit: int | None,
        before: int | None,
    ) -> list[PinRecord]:
        where: list[str] = ["id < ?"]
        args: list[object] = [before or 2**62]
        for column, value in (("namespace", namespace), ("repository", repository), ("tag", tag)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._reader.execute(
            f"SELECT {_PIN_FIELDS}, id FROM pins WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?",
            (*args, -1 if limit is None else limit),
        ).fetchall()
        return [PinRecord(*row) for row in rows]

    # -- uploads ------------------------------------------------------------------------------
    async def create_upload(self, upload: Upload) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.id,
                    upload.repository,
                    upload.offset,
                    upload.hash_state,
                    upload.created_at,
                    upload.updated_at,
                    upload.lease_until,
                    upload.lease_owner,
                ),
            )

        await self._write(tx)

    async def get_upload(self, upload_id: str, repository: str) -> Upload | None:
        row = self._reader.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ? AND repository = ?",
            (upload_id, repository),
        ).fetchone()
        return None if row is None else _upload(row)

    async def acquire_upload(
        self,
        upload_id: str,
        repository: str,
        offset: int | None,
        now: float,
        lease: float,
        owner: str = "",
        take_over: float | None = None,
    ) -> Upload:
        def tx(conn: sqlite3.Connection) -> Upload:
            row = conn.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ? AND repository = ?",
                (upload_id, repository),
            ).fetchone()
            if row is None:
                raise UploadNotFound(upload_id)
            upload = _upload(row)
            if upload.lease_until > now and upload.lease_until != take_over:
                raise UploadBusy(upload_id, upload.lease_owner, upload.lease_until)
            if offset is not None and offset != upload.offset:
                raise UploadOffsetMismatch(upload.offset)
            upload.lease_until, upload.lease_owner = now + lease, owner
            conn.execute(
                "UPDATE uploads SET lease_until = ?, lease_owner = ? WHERE id = ?",
                (upload.lease_until, owner, upload_id),
            )
            return upload

        return await self._write(tx)

    async def renew_upload(
        self, upload_id: str, lease_until: float, new_lease_until: float
    ) -> bool:
        return await self._change(
            "UPDATE uploads SET lease_until = ? WHERE id = ? AND lease_until = ?",
            (new_lease_until, upload_id, lease_until),
        )

    async def checkpoint_upload(
        self,
        upload_id: str,
        lease_until: float,
        offset: int,
        hash_state: bytes | None,
        now: float,
    ) -> bool:
        return await self._change(
            "UPDATE uploads SET offset = ?, hash_state = ?, updated_at = ? "
            "WHERE id = ? AND lease_until = ?",
            (offset, hash_state, now, upload_id, lease_until),
        )

    async def release_upload(
        self,
        upload_id: str,
        lease_until: float,
        offset: int,
        hash_state: bytes | None,
        now: float,
    ) -> bool:
        return await self._change(
            "UPDATE uploads SET offset = ?, hash_state = ?, updated_at = ?, lease_until = 0, "
            "lease_owner = '' WHERE id = ? AND lease_until = ?",
            (offset, hash_state, now, upload_id, lease_until),
        )

    async def delete_upload(self, upload_id: str) -> None:
        await self._change("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        rows = self._reader.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE updated_at < ? AND lease_until < ?",
            (updated_before, time.time()),
        ).fetchall()
        return [_upload(row) for row in rows]
