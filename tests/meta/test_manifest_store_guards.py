"""Guarded tag changes (ManifestStore and ``BlobStore.unlink_blob`` under a ``TagGuard``), against
every backend: refusals change nothing but are recorded, racing writers have one winner, and
no change is judged by a policy that was replaced."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from functools import partial

import pytest

from moorage.meta.errors import PolicyChanged, TagRefused
from moorage.meta.protocols import MetadataStore
from moorage.model import ManifestRecord, Reference
from moorage.policy import Policy
from moorage.registry.tags import TagPolicies
from tests.meta.conftest import Opener
from tests.meta.helpers import ACTOR, ALICE, freeze, manifest, stamped, tagged
from tests.support.clocks import SteppingClock
from tests.support.waiting import wait_until_async


async def test_refusals_change_nothing_but_are_recorded(
    meta: MetadataStore, clock: SteppingClock
) -> None:
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
    assert await meta.tag_at("repo", "v1", clock.now + 1) == events[-1]


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
        await wait_until_async(lambda: pushed >= 20, "20 pushes under the old policy")
        await admin.set_policy(frozen.to_json(), ACTOR, "api", None)
        held = await admin.resolve_tag("repo", "v1")
        after_freeze = pushed + 20
        await wait_until_async(lambda: pushed >= after_freeze, "20 pushes after the freeze")
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
