"""The policy version hint shared by the processes of one SQLite database
(moorage.meta.sqlite.hint)."""

from __future__ import annotations

from pathlib import Path

from moorage.meta.sqlite import SQLiteMetadata
from moorage.meta.sqlite.hint import VersionHint
from tests.meta.helpers import ACTOR


def count_queries(meta: SQLiteMetadata) -> list[str]:
    statements: list[str] = []
    meta._reader.set_trace_callback(statements.append)
    return statements


async def test_a_change_made_elsewhere_is_seen_at_once(tmp_path: Path) -> None:
    one, other = SQLiteMetadata(tmp_path / "m.db"), SQLiteMetadata(tmp_path / "m.db")
    try:
        assert await one.policy_version() == 0
        assert await other.set_policy('{"v": 1}', ACTOR, "api", None) == 1
        assert await one.policy_version() == 1
        assert await other.set_policy('{"v": 2}', ACTOR, "api", None) == 2
        assert await one.policy_version() == 2
        assert await other.policy_version() == 2
    finally:
        await one.close()
        await other.close()


async def test_an_unchanged_version_costs_no_query(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "m.db")
    try:
        await meta.set_policy('{"v": 1}', ACTOR, "api", None)
        queries = count_queries(meta)
        assert [await meta.policy_version() for _ in range(5)] == [1] * 5
        assert len(queries) == 1
    finally:
        await meta.close()


async def test_a_hint_that_disagrees_never_hides_the_stored_version(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "m.db")
    hint = VersionHint(tmp_path / "m.db.policy")
    try:
        await meta.set_policy('{"v": 1}', ACTOR, "api", None)
        assert await meta.policy_version() == 1
        hint.publish(2)  # a change that published its version, then rolled back
        queries = count_queries(meta)
        assert [await meta.policy_version() for _ in range(3)] == [1, 1, 1]
        assert len(queries) == 3  # the database is asked each time, while they disagree
        await meta.set_policy('{"v": 2}', ACTOR, "api", None)
        assert await meta.policy_version() == 2
        hint.publish(1)  # even a hint equal to an older version sends it to the database
        assert await meta.policy_version() == 2
    finally:
        hint.close()
        await meta.close()
