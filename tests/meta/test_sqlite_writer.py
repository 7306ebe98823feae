"""moorage.meta.sqlite.writer: batched writes where each operation stands or falls alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from moorage.meta.sqlite import connect
from moorage.meta.sqlite.writer import GroupCommitWriter


class Boom(Exception):
    pass


async def test_a_failing_operation_leaves_the_rest_of_its_batch(tmp_path: Path) -> None:
    conn = connect(tmp_path / "w.db")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    writer = GroupCommitWriter(conn)
    try:

        def insert(n: int) -> Callable[[sqlite3.Connection], int]:
            def op(c: sqlite3.Connection) -> int:
                c.execute("INSERT INTO t (n) VALUES (?)", (n,))
                if n % 5 == 0:
                    raise Boom(n)
                return n

            return op

        results = await asyncio.gather(
            *(writer.submit(insert(n)) for n in range(1, 41)), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, Boom)]
        assert len(failed) == 8
        assert [r for r in results if not isinstance(r, Boom)] == [n for n in range(1, 41) if n % 5]
        reader = connect(tmp_path / "w.db")
        stored = [row[0] for row in reader.execute("SELECT n FROM t ORDER BY n")]
        reader.close()
        assert stored == [n for n in range(1, 41) if n % 5]
    finally:
        writer.close()


async def test_a_failed_commit_fails_every_operation(tmp_path: Path) -> None:
    conn = connect(tmp_path / "w.db")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    blocker = connect(tmp_path / "w.db")
    blocker.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA busy_timeout = 50")
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: BEGIN in the writer times out
    writer = GroupCommitWriter(conn)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await writer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        blocker.execute("ROLLBACK")
        await writer.submit(lambda c: c.execute("INSERT INTO t VALUES (2)"))
    finally:
        writer.close()
        blocker.close()
