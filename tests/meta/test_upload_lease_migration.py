"""Upload sessions of a database made before leases named their holder survive the migration
that adds ``lease_owner`` (SQLite and PostgreSQL), and work as new ones do."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from moorage.meta.errors import UploadBusy
from moorage.meta.postgres import PostgresMetadata
from moorage.meta.postgres import schema as postgres_schema
from moorage.meta.protocols import MetadataStore
from moorage.meta.sqlite import SQLiteMetadata
from moorage.meta.sqlite import schema as sqlite_schema
from tests.support.postgres import PostgresServer

UPLOAD_ID = "6f1c3c6e-0000-4000-8000-0000000000aa"
#: An upload mid-way, leased until the year 2286 by a request of the code before.
OLD_ROW = (UPLOAD_ID, "repo", 1000, b"state", 100.0, 200.0, 9.9e9)


async def check_migrated_upload(meta: MetadataStore) -> None:
    upload = await meta.get_upload(UPLOAD_ID, "repo")
    assert upload is not None
    assert (upload.offset, upload.hash_state, upload.lease_until) == (1000, b"state", 9.9e9)
    assert upload.lease_owner == ""
    # A holder without a name is never taken for dead: busy until its lease runs out.
    with pytest.raises(UploadBusy) as info:
        await meta.acquire_upload(UPLOAD_ID, "repo", None, 300.0, 60, "me")
    assert info.value.owner == ""
    taken = await meta.acquire_upload(UPLOAD_ID, "repo", 1000, 1e10, 60, "me")
    assert taken.lease_owner == "me"
    assert await meta.checkpoint_upload(UPLOAD_ID, taken.lease_until, 2000, b"s2", 1e10)


async def test_sqlite_database_before_lease_owners(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    before = next(i for i, m in enumerate(sqlite_schema.MIGRATIONS) if "lease_owner" in m)
    for script in sqlite_schema.MIGRATIONS[:before]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {before}")
    conn.execute("INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)", OLD_ROW)
    conn.close()
    meta = SQLiteMetadata(path)
    try:
        await check_migrated_upload(meta)
    finally:
        await meta.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_schema.MIGRATIONS)
    conn.close()


#: The PostgreSQL migrations before the one adding ``lease_owner``.
OLD_POSTGRES = postgres_schema.MIGRATIONS[
    : next(i for i, m in enumerate(postgres_schema.MIGRATIONS) if "lease_owner" in m.sql)
]


@pytest.fixture
def old_postgres(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"moorage_before_owners_{os.getpid()}"
    dsn = postgres_server.create_database(name)
    yield dsn
    postgres_server.drop_database(name)


async def test_postgres_database_before_lease_owners(old_postgres: str) -> None:
    conn = await asyncpg.connect(old_postgres)
    try:
        await postgres_schema.apply_migrations(conn, OLD_POSTGRES)
        await conn.execute(
            'INSERT INTO uploads (id, repository, "offset", hash_state, created_at, '
            "updated_at, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *OLD_ROW,
        )
    finally:
        await conn.close()
    old_version = OLD_POSTGRES[-1].version
    assert await postgres_schema.migrate(old_postgres) == (
        old_version,
        postgres_schema.SCHEMA_VERSION,
    )
    meta = PostgresMetadata(old_postgres)
    try:
        await check_migrated_upload(meta)
    finally:
        await meta.close()
