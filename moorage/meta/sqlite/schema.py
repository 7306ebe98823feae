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
    """
    CREATE TABLE tag_events (
        id INTEGER PRIMARY KEY,  -- rows are never deleted, so ids only grow
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        action TEXT NOT NULL
            CHECK (action IN ('created', 'moved', 'deleted', 'restored', 'refused')),
        old_digest TEXT,
        new_digest TEXT,
        at REAL NOT NULL,
        user TEXT,
        address TEXT NOT NULL,
        request_id TEXT NOT NULL,
        rule TEXT,
        reason TEXT
    );
    CREATE INDEX tag_events_by_tag ON tag_events (repository, tag, id);
    CREATE INDEX tag_events_by_new_digest ON tag_events (new_digest) WHERE new_digest IS NOT NULL;
    CREATE TABLE policy (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        document TEXT NOT NULL,
        version INTEGER NOT NULL,
        source TEXT NOT NULL,
        source_hash TEXT,
        updated_at REAL NOT NULL,
        user TEXT,
        address TEXT NOT NULL
    );
    CREATE TABLE policy_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        user TEXT,
        address TEXT NOT NULL,
        request_id TEXT NOT NULL,
        source TEXT NOT NULL,
        old_document TEXT,
        new_document TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE pins (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        container_kind TEXT NOT NULL,
        container TEXT NOT NULL,
        image TEXT NOT NULL,
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        source TEXT NOT NULL,
        request_uid TEXT NOT NULL,
        user TEXT NOT NULL
    );
    CREATE INDEX pins_by_image ON pins (repository, tag, id);
    CREATE INDEX pins_by_namespace ON pins (namespace, id);
    """,
    # Tag history as chains (history.py): link every event to the previous one of its
    # tag and of the digest it points at, keep each chain's newest event in the tags or
    # manifests row, then drop the two indexes every tag write used to pay for.
    """
    ALTER TABLE tag_events ADD COLUMN tag_previous INTEGER;
    ALTER TABLE tag_events ADD COLUMN digest_previous INTEGER;
    ALTER TABLE tags ADD COLUMN last_event INTEGER;
    ALTER TABLE manifests ADD COLUMN last_event INTEGER;
    CREATE TABLE history_heads (
        kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest')),
        key TEXT NOT NULL,
        repository TEXT NOT NULL,
        last_event INTEGER NOT NULL,
        PRIMARY KEY (kind, key, repository)
    ) WITHOUT ROWID;
    UPDATE tag_events SET tag_previous = (
        SELECT max(p.id) FROM tag_events p
        WHERE p.repository = tag_events.repository AND p.tag = tag_events.tag
          AND p.id < tag_events.id
    );
    UPDATE tag_events SET digest_previous = (
        SELECT max(p.id) FROM tag_events p
        WHERE p.new_digest = tag_events.new_digest AND p.repository = tag_events.repository
          AND p.action IN ('created', 'moved', 'restored') AND p.id < tag_events.id
    ) WHERE action IN ('created', 'moved', 'restored');
    INSERT INTO history_heads (kind, key, repository, last_event)
        SELECT 'tag', tag, repository, max(id) FROM tag_events GROUP BY repository, tag;
    INSERT INTO history_heads (kind, key, repository, last_event)
        SELECT 'digest', new_digest, repository, max(id) FROM tag_events
        WHERE action IN ('created', 'moved', 'restored') GROUP BY repository, new_digest;
    UPDATE tags SET last_event = (
        SELECT h.last_event FROM history_heads h JOIN repositories r ON r.name = h.repository
        WHERE h.kind = 'tag' AND h.key = tags.name AND r.id = tags.repo_id
    );
    UPDATE manifests SET last_event = (
        SELECT h.last_event FROM history_heads h JOIN repositories r ON r.name = h.repository
        WHERE h.kind = 'digest' AND h.key = manifests.digest AND r.id = manifests.repo_id
    );
    DROP INDEX tag_events_by_tag;
    DROP INDEX tag_events_by_new_digest;
    """,
    # Upload leases name the process holding them, so that a dead holder's lease can be
    # taken over before it runs out (moorage.process_identity).
    """
    ALTER TABLE uploads ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    """,
    # Garbage collection (meta/sqlite/collection.py): the digest an upload is completing as,
    # blobs on their way out, the cluster inventory, and tag history by repository and time;
    # usage per repository and pulls per manifest (meta/sqlite/usage.py).
    """
    ALTER TABLE uploads ADD COLUMN digest TEXT;
    CREATE INDEX uploads_by_digest ON uploads (digest) WHERE digest IS NOT NULL;
    CREATE TABLE blob_deletions (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        since REAL NOT NULL,
        reason TEXT NOT NULL,
        marked_at REAL,
        marked_by TEXT
    ) WITHOUT ROWID;
    CREATE TABLE running_images (
        repository TEXT NOT NULL,
        digest TEXT,
        tag TEXT,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        container TEXT NOT NULL,
        image TEXT NOT NULL
    );
    CREATE INDEX running_images_by_repository ON running_images (repository);
    CREATE TABLE inventory (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        taken_at REAL NOT NULL
    );
    CREATE INDEX tag_events_by_repository ON tag_events (repository, at);
    CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);
    CREATE TABLE repository_usage (
        repo_id INTEGER PRIMARY KEY REFERENCES repositories (id),
        pulls INTEGER NOT NULL DEFAULT 0,
        pushes INTEGER NOT NULL DEFAULT 0,
        last_pull REAL,
        last_push REAL
    );
    CREATE TABLE manifest_pulls (
        repo_id INTEGER NOT NULL,
        digest TEXT NOT NULL,
        pulls INTEGER NOT NULL DEFAULT 0,
        last_pull REAL NOT NULL,
        PRIMARY KEY (repo_id, digest)
    ) WITHOUT ROWID;
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
