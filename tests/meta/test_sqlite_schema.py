"""SQLite schema migrations (moorage.meta.sqlite.schema): a database written before tag
history became chains (schema 3) is migrated, and answers every history query as one
written by the current code does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from moorage.meta.errors import TagRefused
from moorage.meta.protocols import MetadataStore
from moorage.meta.sqlite import SQLiteMetadata, connect
from moorage.meta.sqlite.schema import MIGRATIONS
from moorage.model import Actor, Refusal, TagEvent, TagGuard
from tests.meta.helpers import ACTOR, manifest

ALICE = Actor("alice", "10.0.0.7", "req-alice")
TAGS = [("a", "t"), ("a", "u"), ("a", "v1"), ("b", "t"), ("a", "never")]
RECORDS = [manifest(f"m{i}") for i in range(3)]


def _frozen(tag: str, current: str | None, new: str | None) -> Refusal | None:
    if tag == "v1" and current is not None and current != new:
        return Refusal("a", tag, current, new, "frozen", "v1 is frozen")
    return None


frozen = TagGuard(_frozen)


async def write_history(meta: MetadataStore) -> None:
    one, two, three = RECORDS
    await meta.put_manifest("a", one, "t", ACTOR)
    await meta.put_manifest("a", one, "u", ACTOR)
    await meta.put_manifest("a", two, "v1", ACTOR, frozen)
    await meta.put_manifest("b", one, "t", ALICE)
    await meta.put_manifest("a", two, "t", ACTOR)
    with pytest.raises(TagRefused):
        await meta.put_manifest("a", three, "v1", ALICE, frozen)
    assert await meta.delete_manifest("a", one.digest, ACTOR)
    await meta.put_manifest("a", one, (), ACTOR)
    assert await meta.restore_tag("a", "u", one.digest, ALICE) is None
    await meta.put_manifest("a", three, "t", ACTOR)


async def answers(meta: MetadataStore) -> dict[str, list[TagEvent] | TagEvent | None]:
    result: dict[str, list[TagEvent] | TagEvent | None] = {}
    for repository, tag in TAGS:
        events = await meta.tag_history(repository, tag, None, None)
        result[f"history {repository}:{tag}"] = events
        result[f"page {repository}:{tag}"] = await meta.tag_history(
            repository, tag, 1, events[0].id if events else None
        )
        for event in events:
            result[f"at {repository}:{tag} {event.id}"] = await meta.tag_at(
                repository, tag, event.at + 1e-9
            )
    for record in RECORDS:
        result[f"digest {record.digest}"] = await meta.digest_events(record.digest)
    return result


def downgrade_copy(current: Path, old: Path) -> None:
    """A schema-3 database holding the same rows, as the code before chains wrote them."""
    conn = sqlite3.connect(old, isolation_level=None)
    for script in MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("ATTACH DATABASE ? AS current", (str(current),))
    for table in ("repositories", "blobs", "repository_blobs", "manifests", "tags", "tag_events"):
        columns = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
        names = ", ".join(columns)
        conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM current.{table}")
    conn.execute("DETACH DATABASE current")
    conn.close()


async def test_history_written_before_chains_migrates(tmp_path: Path) -> None:
    current = SQLiteMetadata(tmp_path / "current.db")
    await write_history(current)
    expected = await answers(current)
    await current.close()
    assert expected["history a:t"] and expected["digest " + RECORDS[0].digest]

    downgrade_copy(tmp_path / "current.db", tmp_path / "old.db")
    migrated = SQLiteMetadata(tmp_path / "old.db")
    try:
        assert await answers(migrated) == expected
        # ... and its history goes on from where it was.
        await migrated.put_manifest("a", RECORDS[1], "u", ALICE)
        events = await migrated.tag_history("a", "u", None, None)
        assert [e.action for e in events] == ["moved", "restored", "deleted", "created"]
    finally:
        await migrated.close()
    conn = connect(tmp_path / "old.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not {"tag_events_by_tag", "tag_events_by_new_digest"} & indexes
    conn.close()
