"""Versioned SQLite schema. Each entry in MIGRATIONS moves ``PRAGMA user_version`` up by one."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    """
    CREATE TABLE repositories (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE repository_blobs (
        repo_id INTEGER NOT NULL REFERENCES repositories (id),
        digest TEXT NOT NULL REFERENCES blobs (digest),
        created_at REAL NOT NULL,
        PRIMARY KEY (repo_id, digest)
    ) WITHOUT ROWID;
    CREATE TABLE manifests (
        repo_id INTEGER NOT NULL REFERENCES repositories (id),
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        annotations TEXT,
        size INTEGER NOT NULL,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (repo_id, digest)
    ) WITHOUT ROWID;
    CREATE INDEX manifests_by_subject ON manifests (repo_id, subject) WHERE subject IS NOT NULL;
    CREATE TABLE manifest_references (
        repo_id INTEGER NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
        target TEXT NOT NULL,
        PRIMARY KEY (repo_id, digest, kind, target),
        FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest)
    ) WITHOUT ROWID;
    CREATE INDEX manifest_references_by_target ON manifest_references (target);
    CREATE TABLE tags (
        repo_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (repo_id, name),
        FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest)
    ) WITHOUT ROWID;
    CREATE INDEX tags_by_digest ON tags (repo_id, digest);
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        repository TEXT NOT NULL,
        offset INTEGER NOT NULL,
        hash_state BLOB,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX uploads_by_age ON uploads (updated_at);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; safe when several processes start at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for index in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[index].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {index + 1}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(MIGRATIONS)
