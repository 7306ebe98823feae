"""Tag history, guards and the stored policy (moorage.meta.base), against every backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from functools import partial

import pytest

from moorage.meta.base import ManifestNotFound, MetadataStore, PolicyChanged, TagRefused
from moorage.model import Actor, ManifestRecord, Reference, Refusal, TagGuard
from moorage.policy import Policy
from moorage.registry.tags import TagPolicies
from tests.meta.conftest import Opener
from tests.meta.test_metadata_contract import ACTOR, manifest

ALICE = Actor("alice", "10.0.0.7", "req-alice")


def freeze(*tags: str) -> TagGuard:
    """A guard that refuses moving or deleting ``tags`` once they exist."""

    def guard(tag: str, current: str | None, new: str | None) -> Refusal | None:
        if tag in tags and current is not None and current != new:
            return Refusal("repo", tag, current, new, "frozen", f"{tag} is frozen")
        return None

    return TagGuard(guard)


async def test_changes_are_recorded(meta: MetadataStore) -> None:
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


async def test_refusals_change_nothing_but_are_recorded(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    guard = freeze("v1")
    await meta.put_manifest("repo", one, "v1", ACTOR, guard)
    await meta.put_manifest("repo", one, "v1", ACTOR, guard)  # same digest: allowed
    with pytest.raises(TagRefused) as info:
        await meta.put_manifest("repo", two, "v1", ALICE, guard)
    assert info.value.refusal.attempted_digest == two.digest
    assert await meta.get_manifest("repo", two.digest) is None  # not stored either
    assert await meta.delete_tag("repo", "missing", ALICE, guard) is False
    with pytest.raises(TagRefused):
        await meta.delete_tag("repo", "v1", ALICE, guard)
    with pytest.raises(TagRefused):
        await meta.delete_manifest("repo", one.digest, ALICE, guard)
    await meta.put_manifest("repo", two, (), ACTOR)  # untagged
    with pytest.raises(TagRefused):
        await meta.restore_tag("repo", "v1", two.digest, ALICE, guard)
    resolved = await meta.resolve_tag("repo", "v1")
    assert resolved is not None and resolved.digest == one.digest
    events = await meta.tag_history("repo", "v1", None, None)
    assert [e.action for e in events] == ["refused", "refused", "refused", "refused", "created"]
    assert [e.new_digest for e in events[:4]] == [two.digest, None, None, two.digest]
    assert all(e.rule == "frozen" and e.reason == "v1 is frozen" for e in events[:4])
    assert await meta.tag_at("repo", "v1", time.time() + 1) == events[-1]


async def test_restore_needs_a_manifest_of_the_repository(meta: MetadataStore) -> None:
    record = manifest("elsewhere")
    await meta.put_manifest("other", record, (), ACTOR)
    with pytest.raises(ManifestNotFound):
        await meta.restore_tag("repo", "t", record.digest, ACTOR)


async def test_tag_at_a_time(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    before = time.time() - 1
    await meta.put_manifest("repo", one, "t", ACTOR)
    await asyncio.sleep(0.02)
    middle = time.time()
    await asyncio.sleep(0.02)
    await meta.put_manifest("repo", two, "t", ACTOR)
    await asyncio.sleep(0.02)
    moved = time.time()
    await asyncio.sleep(0.02)
    await meta.delete_tag("repo", "t", ACTOR)
    assert await meta.tag_at("repo", "t", before) is None
    at_middle = await meta.tag_at("repo", "t", middle)
    assert at_middle is not None and at_middle.new_digest == one.digest
    at_moved = await meta.tag_at("repo", "t", moved)
    assert at_moved is not None and at_moved.new_digest == two.digest
    now = await meta.tag_at("repo", "t", time.time() + 1)
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


async def test_policy_is_versioned_and_its_changes_recorded(meta: MetadataStore) -> None:
    assert await meta.policy_version() == 0
    assert await meta.get_policy() is None
    assert await meta.set_policy('{"v": 1}', ALICE, "api", None) == 1
    assert await meta.set_policy('{"v": 2}', ACTOR, "configuration", "hash") == 2
    record = await meta.get_policy()
    assert record is not None
    assert (record.document, record.version, record.source, record.source_hash) == (
        '{"v": 2}',
        2,
        "configuration",
        "hash",
    )
    assert (record.user, record.address) == ("tester", "127.0.0.1")
    changes = await meta.policy_changes(None)
    assert [(c.old_document, c.new_document, c.source) for c in changes] == [
        ('{"v": 1}', '{"v": 2}', "configuration"),
        (None, '{"v": 1}', "api"),
    ]
    assert changes[1].user == "alice" and changes[1].request_id == "req-alice"
    assert len(await meta.policy_changes(1)) == 1


async def test_guarded_tag_writes_race_atomically(open_meta: Opener) -> None:
    """Handles racing to create one frozen tag with different digests: exactly one wins."""
    handles = [open_meta() for _ in range(4)]
    try:
        records = [manifest(f"racer-{i}") for i in range(8)]
        guard = freeze("v1")
        results = await asyncio.gather(
            *(
                handles[i % 4].put_manifest("repo", record, "v1", ACTOR, guard)
                for i, record in enumerate(records)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(r, TagRefused) for r in results if r not in winners)
        resolved = await handles[0].resolve_tag("repo", "v1")
        winner = records[results.index(winners[0])]
        assert resolved is not None and resolved.digest == winner.digest
        events = await handles[0].tag_history("repo", "v1", None, None)
        assert sorted(e.action for e in events) == ["created"] + ["refused"] * 7
        assert all(e.old_digest == winner.digest for e in events if e.action == "refused")
    finally:
        for handle in handles:
            await handle.close()


async def test_guard_covers_tags_on_indexes_that_list_a_manifest(meta: MetadataStore) -> None:
    child = manifest("child")
    index = manifest("index", Reference("manifest", child.digest))
    await meta.put_manifest("repo", child, "loose", ACTOR)
    await meta.put_manifest("repo", index, "v1", ACTOR)
    with pytest.raises(TagRefused) as info:
        await meta.delete_manifest("repo", child.digest, ALICE, freeze("v1"))
    assert (info.value.refusal.tag, info.value.refusal.current_digest) == ("v1", index.digest)
    assert await meta.get_manifest("repo", child.digest) is not None
    assert await meta.delete_manifest("repo", child.digest, ALICE, freeze())
    assert await meta.resolve_tag("repo", "loose") is None
    index_tag = await meta.resolve_tag("repo", "v1")  # only the child's own tags go with it
    assert index_tag is not None and index_tag.digest == index.digest


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


async def test_unlinking_a_blob_a_guarded_tag_uses_is_refused(meta: MetadataStore) -> None:
    layer, spare = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    for blob in (layer, spare):
        await meta.add_blob("repo", blob, 10)
    image = manifest("image", Reference("blob", layer))
    index = manifest("index", Reference("manifest", image.digest))
    await meta.put_manifest("repo", image, "loose", ACTOR)
    await meta.put_manifest("repo", index, "v1", ACTOR)

    with pytest.raises(TagRefused) as info:  # through the index v1 points at
        await meta.unlink_blob("repo", layer, ALICE, freeze("v1"))
    assert (info.value.refusal.tag, info.value.refusal.current_digest) == ("v1", index.digest)
    assert await meta.blob_size("repo", layer) == 10
    latest = (await meta.tag_history("repo", "v1", 1, None))[0]
    assert (latest.action, latest.user, latest.new_digest) == ("refused", "alice", None)
    with pytest.raises(TagRefused):  # directly
        await meta.unlink_blob("repo", layer, ALICE, freeze("loose"))

    assert await meta.unlink_blob("repo", spare, ALICE, freeze("v1", "loose"))  # nobody uses it
    assert await meta.unlink_blob("repo", layer, ALICE, freeze("other"))
    assert await meta.blob_size("repo", layer) is None
    assert await meta.unlink_blob("repo", layer, ALICE, freeze("v1")) is False
    assert await meta.unlink_blob("nowhere", layer, ALICE, freeze("v1")) is False


def stamped(version: int) -> TagGuard:
    """A guard that allows every change, enforcing the stored policy of ``version``."""
    return TagGuard(lambda tag, current, new: None, version)


async def tagged(meta: MetadataStore, tag: str) -> str | None:
    record = await meta.resolve_tag("repo", tag)
    return None if record is None else record.digest


async def test_a_guard_for_a_replaced_policy_changes_nothing(meta: MetadataStore) -> None:
    layer = "sha256:" + "c" * 64
    await meta.add_blob("repo", layer, 10)
    one, two = manifest("one", Reference("blob", layer)), manifest("two")
    await meta.put_manifest("repo", one, "t", ACTOR)
    await meta.put_manifest("repo", two, (), ACTOR)
    assert await meta.set_policy('{"rules": []}', ACTOR, "api", None) == 1
    before = await meta.tag_history("repo", "t", None, None)

    attempts = [
        lambda guard: meta.put_manifest("repo", two, "t", ALICE, guard),
        lambda guard: meta.put_manifest("repo", two, "new", ALICE, guard),
        lambda guard: meta.restore_tag("repo", "t", two.digest, ALICE, guard),
        lambda guard: meta.delete_tag("repo", "t", ALICE, guard),
        lambda guard: meta.delete_manifest("repo", one.digest, ALICE, guard),
        lambda guard: meta.unlink_blob("repo", layer, ALICE, guard),
    ]
    for attempt in attempts:
        with pytest.raises(PolicyChanged) as info:
            await attempt(stamped(0))
        assert info.value.stored == 1
    assert await tagged(meta, "t") == one.digest
    assert await meta.resolve_tag("repo", "new") is None
    assert await meta.blob_size("repo", layer) == 10
    assert await meta.tag_history("repo", "t", None, None) == before

    # Under the policy in force, the same changes go through.
    await meta.put_manifest("repo", two, "t", ALICE, stamped(1))
    assert await tagged(meta, "t") == two.digest
    assert await meta.delete_tag("repo", "t", ALICE, stamped(1))
    assert await meta.delete_manifest("repo", one.digest, ALICE, stamped(1))
    assert await meta.unlink_blob("repo", layer, ALICE, stamped(1))


async def test_no_tag_moves_once_a_policy_freezing_it_commits(open_meta: Opener) -> None:
    """Pushers keep moving a tag, each through a process's cached policy, while another
    handle freezes the tag: once the policy change has committed, the tag stays where it is."""
    pusher, admin = open_meta(), open_meta()
    try:
        policies = TagPolicies(pusher)
        one, two = manifest("one"), manifest("two")
        await pusher.put_manifest("repo", one, "v1", ACTOR)
        await pusher.put_manifest("repo", two, (), ACTOR)
        frozen = Policy.from_dict({"rules": [{"tags": "v*", "mode": "immutable"}]})
        stop = asyncio.Event()
        pushed = 0

        async def push(records: itertools.cycle[ManifestRecord]) -> None:
            nonlocal pushed
            while not stop.is_set():
                change = partial(pusher.put_manifest, "repo", next(records), "v1", ACTOR)
                with contextlib.suppress(TagRefused):
                    await policies.guarded("repo", change)
                pushed += 1

        pushers = [asyncio.create_task(push(itertools.cycle([two, one]))) for _ in range(4)]
        while pushed < 20:
            await asyncio.sleep(0.001)
        await admin.set_policy(frozen.to_json(), ACTOR, "api", None)
        held = await admin.resolve_tag("repo", "v1")
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*pushers)
        assert held is not None
        assert await tagged(meta=admin, tag="v1") == held.digest
        frozen_at = (await admin.policy_changes(1))[0].at
        events = await admin.tag_history("repo", "v1", None, None)
        assert [e for e in events if e.action == "moved" and e.at >= frozen_at] == []
        assert events[0].action == "refused"
    finally:
        await pusher.close()
        await admin.close()
