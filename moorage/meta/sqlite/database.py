"""The SQLite backend's plumbing: connections, the group-commit writer, repository ids.

Several worker processes share one database file in WAL mode. Reads run inline on the event
loop (indexed lookups take microseconds and WAL readers never wait for writers); every write
runs on one thread per process that commits queued writes together (``writer.py``), so
waiting for another process's write lock or for an fsync never stalls the loop, and
concurrent pushes share an fsync. ``synchronous=FULL``: a push that was acknowledged survives
power loss.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

from moorage.meta.errors import BlobBeingDeleted
from moorage.meta.sqlite.hint import VersionHint
from moorage.meta.sqlite.schema import migrate
from moorage.meta.sqlite.writer import GroupCommitWriter

T = TypeVar("T")
Clock = Callable[[], float]


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


#: Links a blob into a repository, or renews the link's time: garbage collection spares young
#: links, so a blob uploaded or mounted again waits for the manifest that will need it.
LINK_BLOB = (
    "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at"
)


def record_blob(conn: sqlite3.Connection, repo_id: int, digest: str, size: int, now: float) -> None:
    """Record a blob and link it into the repository; a deletion of the blob is undone.
    BlobBeingDeleted (nothing changes) while its bytes are being deleted."""
    deletion = conn.execute(
        "SELECT marked_at FROM blob_deletions WHERE digest = ?", (digest,)
    ).fetchone()
    if deletion is not None:
        if deletion[0] is not None:
            raise BlobBeingDeleted(digest)
        conn.execute("DELETE FROM blob_deletions WHERE digest = ?", (digest,))
    conn.execute(
        "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (digest) DO NOTHING",
        (digest, size, now),
    )
    conn.execute(LINK_BLOB, (repo_id, digest, now))


def existing_repo(conn: sqlite3.Connection, repository: str) -> int | None:
    """Id of the repository as the transaction sees it, or None."""
    row = conn.execute("SELECT id FROM repositories WHERE name = ?", (repository,)).fetchone()
    return None if row is None else int(row[0])


def ensure_repo(conn: sqlite3.Connection, repository: str, now: float) -> int:
    """Id of the repository, created (at ``now``) if it does not exist."""
    repo_id = existing_repo(conn, repository)
    if repo_id is not None:
        return repo_id
    cur = conn.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?)", (repository, now)
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


class Database:
    """One handle on the database: a reader connection, the writer thread, and the files
    beside the database (the writers' lock, the policy version hint)."""

    def __init__(
        self,
        path: str | Path,
        *,
        owned_directory: Path | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._owned_directory = owned_directory
        self._clock = clock
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
    def temporary(cls, *, clock: Clock = time.time) -> Self:
        """A database in a new temporary directory, removed on close (throwaway registries)."""
        directory = Path(tempfile.mkdtemp(prefix="moorage-meta-"))
        return cls(directory / "moorage.db", owned_directory=directory, clock=clock)

    async def connect(self) -> None:
        return None  # the database was opened and migrated by the constructor

    async def close(self) -> None:
        self._writer.close()
        self._reader.close()
        self._policy_hint.close()
        if self._owned_directory is not None:
            shutil.rmtree(self._owned_directory, ignore_errors=True)

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
            repo_id = existing_repo(self._reader, repository)
            if repo_id is None:
                return None
            self._repo_ids[repository] = repo_id
        return repo_id
