"""Tag history (ManifestStore's ``tag_history``, ``tag_at``, ``digest_events``), against every
backend: every change recorded, by whom and when, through deleted tags and manifests."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from moorage.meta.errors import ManifestNotFound
from moorage.meta.protocols import MetadataStore
from tests.meta.conftest import Opener
from tests.meta.helpers import ACTOR, ALICE, manifest
from tests.support.clocks import SteppingClock


async def test_changes_are_recorded(meta: MetadataStore, clock: SteppingClock) -> None:
    one, two = manifest("one"), manifest("two")
    await meta.put_manifest("repo", one, "t", ACTOR)
    await meta.put_manifest("repo", one, "t", ACTOR)  # no change, no event
    await meta.put_manifest("repo", two, "t", ALICE)
    await meta.delete_tag("repo", "t", ACTOR)
    assert await meta.restore_tag("repo", "t", one.digest, ALICE) is None
    events = await meta.tag_history("repo", "t", None, None)
    assert [(e.action, e.old_digest, e.new_digest) for e in events] == [
        ("restored", None, one.digest),
        ("deleted", two.digest, None),
        ("moved", one.digest, two.digest),
        ("created", None, one.digest),
    ]
    moved = events[2]
    assert (moved.user, moved.address, moved.request_id) == ("alice", "10.0.0.7", "req-alice")
    assert abs(moved.at - time.time()) < 60
    assert all(e.at <= clock.now for e in events)  # the store's clock
    assert [e.at for e in events] == sorted((e.at for e in events), reverse=True)
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    page = await meta.tag_history("repo", "t", 2, events[1].id)
    assert [e.action for e in page] == ["moved", "created"]
    assert await meta.tag_history("repo", "other", None, None) == []


async def test_deleting_a_manifest_records_its_tags(meta: MetadataStore) -> None:
    record = manifest("m")
    await meta.put_manifest("repo", record, "a", ACTOR)
    await meta.put_manifest("repo", record, "b", ACTOR)
    assert await meta.delete_manifest("repo", record.digest, ALICE)
    for tag in ("a", "b"):
        latest = (await meta.tag_history("repo", tag, 1, None))[0]
        assert (latest.action, latest.old_digest, latest.user) == (
            "deleted",
            record.digest,
            "alice",
        )


async def test_restore_needs_a_manifest_of_the_repository(meta: MetadataStore) -> None:
    record = manifest("elsewhere")
    await meta.put_manifest("other", record, (), ACTOR)
    with pytest.raises(ManifestNotFound):
        await meta.restore_tag("repo", "t", record.digest, ACTOR)


async def test_tag_at_a_time(meta: MetadataStore, clock: SteppingClock) -> None:
    one, two = manifest("one"), manifest("two")
    before = clock.now - 1
    await meta.put_manifest("repo", one, "t", ACTOR)
    clock.advance(20)
    middle = clock.now
    clock.advance(20)
    await meta.put_manifest("repo", two, "t", ACTOR)
    clock.advance(20)
    moved = clock.now
    clock.advance(20)
    await meta.delete_tag("repo", "t", ACTOR)
    assert await meta.tag_at("repo", "t", before) is None
    at_middle = await meta.tag_at("repo", "t", middle)
    assert at_middle is not None and at_middle.new_digest == one.digest
    at_moved = await meta.tag_at("repo", "t", moved)
    assert at_moved is not None and at_moved.new_digest == two.digest
    now = await meta.tag_at("repo", "t", clock.now + 1)
    assert now is not None and now.action == "deleted" and now.new_digest is None


async def test_digest_events_span_repositories(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    await meta.put_manifest("a", one, "x", ACTOR)
    await meta.put_manifest("b", one, "y", ACTOR)
    await meta.put_manifest("a", two, "x", ACTOR)
    events = await meta.digest_events(one.digest)
    assert [(e.repository, e.tag, e.action) for e in events] == [
        ("a", "x", "created"),
        ("b", "y", "created"),
        ("a", "x", "moved"),
    ]


async def test_history_goes_on_through_deleted_tags_and_manifests(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    await meta.put_manifest("repo", one, "t", ACTOR)
    await meta.put_manifest("repo", one, "u", ACTOR)
    await meta.put_manifest("repo", two, "t", ACTOR)
    assert await meta.delete_manifest("repo", one.digest, ACTOR)  # takes "u" with it
    await meta.put_manifest("repo", one, "u", ALICE)  # pushed again, and tagged again
    assert await meta.delete_tag("repo", "t", ACTOR)
    await meta.put_manifest("repo", one, "t", ALICE)  # "t" comes back, on the old digest
    actions = {
        tag: [
            (e.action, e.old_digest, e.new_digest)
            for e in await meta.tag_history("repo", tag, None, None)
        ]
        for tag in ("t", "u")
    }
    assert actions == {
        "t": [
            ("created", None, one.digest),
            ("deleted", two.digest, None),
            ("moved", one.digest, two.digest),
            ("created", None, one.digest),
        ],
        "u": [
            ("created", None, one.digest),
            ("deleted", one.digest, None),
            ("created", None, one.digest),
        ],
    }
    spans = [(e.tag, e.action) for e in await meta.digest_events(one.digest)]
    assert spans == [
        ("t", "created"),
        ("u", "created"),
        ("t", "moved"),
        ("u", "deleted"),
        ("u", "created"),
        ("t", "created"),
    ]
    assert [e.action for e in await meta.digest_events(two.digest)] == ["moved", "deleted"]


async def test_history_pages_from_any_event_id(meta: MetadataStore) -> None:
    records = [manifest(f"m{i}") for i in range(5)]
    for record in records:
        await meta.put_manifest("repo", record, "t", ACTOR)
        await meta.put_manifest("repo", record, "other", ACTOR)
    events = await meta.tag_history("repo", "t", None, None)
    assert [e.new_digest for e in events] == [r.digest for r in reversed(records)]
    # A cursor that is not an event of this tag (another tag's) still bounds the page.
    others = await meta.tag_history("repo", "other", None, None)
    page = await meta.tag_history("repo", "t", 2, others[1].id)
    assert page == [e for e in events if e.id < others[1].id][:2]
    assert await meta.tag_history("repo", "t", 0, None) == []
    assert await meta.tag_history("repo", "t", 10, events[-1].id) == []


async def test_concurrent_writers_lose_no_history(open_meta: Opener) -> None:
    """Handles (like replicas or worker processes) moving one tag at once: every change is in
    its history, newest first, and the digest it ended on is the newest event's."""
    handles = [open_meta() for _ in range(3)]
    try:
        records = [manifest(f"writer-{i}") for i in range(24)]
        await asyncio.gather(
            *(
                handles[i % 3].put_manifest("repo", record, "latest", ACTOR)
                for i, record in enumerate(records)
            )
        )
        events = await handles[1].tag_history("repo", "latest", None, None)
        assert sorted(e.new_digest or "" for e in events) == sorted(r.digest for r in records)
        assert [e.action for e in events].count("created") == 1
        assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
        assert all(
            newer.old_digest == older.new_digest for newer, older in itertools.pairwise(events)
        )
        resolved = await handles[2].resolve_tag("repo", "latest")
        assert resolved is not None and resolved.digest == events[0].new_digest
        for record in records:
            spans = await handles[0].digest_events(record.digest)
            assert [e.new_digest for e in spans][:1] == [record.digest]
    finally:
        for handle in handles:
            await handle.close()
