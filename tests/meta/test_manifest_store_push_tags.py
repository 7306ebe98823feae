"""A manifest pushed with several tags (``put_manifest(..., tags, ...)``), against every backend:
every tag in the manifest's transaction, each change in its tag's history, all or none under a
guard."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from moorage.meta.errors import MissingReferences, PolicyChanged, TagRefused
from moorage.meta.protocols import MetadataStore
from moorage.model import Reference, TagGuard
from tests.meta.conftest import Opener
from tests.meta.helpers import ACTOR, ALICE, changes, digest, freeze, manifest, tagged


async def test_a_push_points_every_tag_at_the_manifest(meta: MetadataStore) -> None:
    record = manifest("multi")
    result = await meta.put_manifest("repo", record, ("1.2.3", "1.2", "1", "latest"), ALICE)
    assert result.previous == {"1.2.3": None, "1.2": None, "1": None, "latest": None}
    assert await meta.list_tags("repo", None, None) == ["1", "1.2", "1.2.3", "latest"]
    for tag in ("1.2.3", "1.2", "1", "latest"):
        assert await tagged(meta, tag) == record.digest
        events = await meta.tag_history("repo", tag, None, None)
        assert [(e.action, e.new_digest, e.user) for e in events] == [
            ("created", record.digest, "alice")
        ]
    # Every tag it points at is found from the digest too.
    pointed = await meta.digest_events(record.digest)
    assert sorted(e.tag for e in pointed) == ["1", "1.2", "1.2.3", "latest"]


async def test_moves_and_creations_in_one_push(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    await meta.put_manifest("repo", one, ("latest", "stable", "v1"), ACTOR)
    result = await meta.put_manifest("repo", two, ("latest", "v2", "stable"), ALICE)
    assert result.previous == {"latest": one.digest, "v2": None, "stable": one.digest}
    assert result.previous_digest == one.digest  # the first tag's
    assert await changes(meta, "latest") == [
        ("moved", one.digest, two.digest),
        ("created", None, one.digest),
    ]
    assert await changes(meta, "v2") == [("created", None, two.digest)]
    assert await changes(meta, "v1") == [("created", None, one.digest)]
    assert await tagged(meta, "v1") == one.digest
    # Re-pushing onto tags that already hold the digest changes (and records) nothing.
    again = await meta.put_manifest("repo", two, ("v2", "latest"), ACTOR)
    assert again.previous == {"v2": two.digest, "latest": two.digest}
    assert len(await changes(meta, "latest")) == 2


async def test_each_tag_of_a_push_is_in_the_digest_history(meta: MetadataStore) -> None:
    """The changes of one push all point at one digest: each is found from the digest, also
    when the manifest was stored and tagged before, and each one's next change too."""
    one, two = manifest("one"), manifest("two")
    await meta.put_manifest("repo", one, ("a",), ACTOR)
    await meta.put_manifest("repo", one, ("b", "c", "d"), ACTOR)
    await meta.put_manifest("repo", two, ("c", "a"), ACTOR)
    assert [(e.tag, e.action, e.new_digest) for e in await meta.digest_events(one.digest)] == [
        ("a", "created", one.digest),
        ("b", "created", one.digest),
        ("c", "created", one.digest),
        ("d", "created", one.digest),
        ("c", "moved", two.digest),
        ("a", "moved", two.digest),
    ]
    assert [(e.tag, e.action) for e in await meta.digest_events(two.digest)] == [
        ("c", "moved"),
        ("a", "moved"),
    ]
    assert await meta.delete_manifest("repo", one.digest, ACTOR)  # takes b and d with it
    await meta.put_manifest("repo", one, ("b", "e"), ACTOR)  # and back, with a new tag
    assert [(e.tag, e.action) for e in await meta.digest_events(one.digest)][-4:] == [
        ("b", "deleted"),
        ("d", "deleted"),
        ("b", "created"),
        ("e", "created"),
    ]


async def test_a_tag_named_twice_counts_once(meta: MetadataStore) -> None:
    record = manifest("twice")
    result = await meta.put_manifest("repo", record, ("a", "b", "a", "b", "a"), ACTOR)
    assert list(result.previous) == ["a", "b"]
    assert await changes(meta, "a") == [("created", None, record.digest)]
    assert await meta.list_tags("repo", None, None) == ["a", "b"]


async def test_a_bare_string_is_one_tag(meta: MetadataStore) -> None:
    record = manifest("bare")
    result = await meta.put_manifest("repo", record, "latest", ACTOR)
    assert result.previous == {"latest": None}
    assert await meta.list_tags("repo", None, None) == ["latest"]


async def test_no_tags_is_a_push_by_digest(meta: MetadataStore) -> None:
    record = manifest("untagged")
    result = await meta.put_manifest("repo", record, (), ACTOR, freeze("anything"))
    assert result.previous == {}
    assert result.previous_digest is None
    assert await meta.get_manifest("repo", record.digest) == record
    assert await meta.list_tags("repo", None, None) == []


async def test_one_refused_tag_refuses_the_whole_push(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    guard = freeze("v1")
    await meta.put_manifest("repo", one, ("v1", "latest"), ACTOR, guard)
    with pytest.raises(TagRefused) as info:
        await meta.put_manifest("repo", two, ("latest", "v1", "new"), ALICE, guard)
    assert [(r.tag, r.current_digest, r.attempted_digest) for r in info.value.refusals] == [
        ("v1", one.digest, two.digest)
    ]
    assert info.value.refusal == info.value.refusals[0]
    # Nothing is stored but the refusal: not the manifest, no tag moved or created.
    assert await meta.get_manifest("repo", two.digest) is None
    assert await tagged(meta, "latest") == one.digest
    assert await tagged(meta, "new") is None
    assert await meta.list_tags("repo", None, None) == ["latest", "v1"]
    assert await changes(meta, "latest") == [("created", None, one.digest)]
    assert await changes(meta, "new") == []
    refused = (await meta.tag_history("repo", "v1", 1, None))[0]
    assert (refused.action, refused.old_digest, refused.new_digest, refused.user) == (
        "refused",
        one.digest,
        two.digest,
        "alice",
    )
    assert refused.reason == "v1 is frozen"
    assert [e.tag for e in await meta.digest_events(two.digest)] == []


async def test_every_refused_tag_is_recorded(meta: MetadataStore) -> None:
    one, two = manifest("one"), manifest("two")
    guard = freeze("v1", "v2")
    await meta.put_manifest("repo", one, ("v1", "v2"), ACTOR, guard)
    with pytest.raises(TagRefused) as info:
        await meta.put_manifest("repo", two, ("v2", "fresh", "v1"), ALICE, guard)
    assert [r.tag for r in info.value.refusals] == ["v2", "v1"]
    assert "v2 is frozen" in str(info.value) and "v1 is frozen" in str(info.value)
    for tag in ("v1", "v2"):
        assert await changes(meta, tag) == [
            ("refused", one.digest, two.digest),
            ("created", None, one.digest),
        ]
        assert await tagged(meta, tag) == one.digest
    assert await tagged(meta, "fresh") is None
    assert await changes(meta, "fresh") == []


async def test_missing_references_store_nothing(meta: MetadataStore) -> None:
    layer = digest("absent-layer")
    record = manifest("needs", Reference("blob", layer))
    with pytest.raises(MissingReferences):
        await meta.put_manifest("repo", record, ("a", "b"), ACTOR, freeze("a"))
    assert await meta.get_manifest("repo", record.digest) is None
    assert await changes(meta, "a") == [] and await changes(meta, "b") == []


async def test_a_guard_for_a_replaced_policy_tags_nothing(meta: MetadataStore) -> None:
    one = manifest("one")
    await meta.set_policy('{"rules": []}', ACTOR, "api", None)
    allow_all = TagGuard(lambda tag, current, new: None, 0)
    with pytest.raises(PolicyChanged):
        await meta.put_manifest("repo", one, ("a", "b"), ACTOR, allow_all)
    assert await meta.get_manifest("repo", one.digest) is None
    assert await meta.list_tags("repo", None, None) == []


async def test_racing_pushes_of_the_same_tags_never_split_them(open_meta: Opener) -> None:
    """Handles (like replicas) pushing different manifests to the same tags, named in
    different orders: no deadlock, and since each push changes all its tags at once, every
    tag went through the same digests in the same order and ends on the same one."""
    handles = [open_meta() for _ in range(3)]
    orders = itertools.cycle([("a", "b", "c"), ("c", "b", "a"), ("b", "a", "c")])
    try:
        records = [manifest(f"racer-{i}") for i in range(18)]
        await asyncio.gather(
            *(
                handles[i % 3].put_manifest("repo", record, next(orders), ACTOR)
                for i, record in enumerate(records)
            )
        )
        histories = [
            [e.new_digest for e in await handles[0].tag_history("repo", tag, None, None)]
            for tag in ("a", "b", "c")
        ]
        assert histories[0] == histories[1] == histories[2]
        assert sorted(d or "" for d in histories[0]) == sorted(r.digest for r in records)
        final = {await tagged(handles[1], tag) for tag in ("a", "b", "c")}
        assert final == {histories[0][0]}
    finally:
        for handle in handles:
            await handle.close()


async def test_racing_pushes_to_frozen_tags_have_one_winner(open_meta: Opener) -> None:
    """Pushes racing to create the same frozen tags, with a mutable one among them: one push
    wins all of them; every other is refused whole and leaves even the mutable tag alone."""
    handles = [open_meta() for _ in range(3)]
    try:
        records = [manifest(f"frozen-{i}") for i in range(9)]
        guard = freeze("v1", "v1.0")
        results = await asyncio.gather(
            *(
                handles[i % 3].put_manifest(
                    "repo", record, ("latest", "v1.0", "v1")[i % 2 :], ACTOR, guard
                )
                for i, record in enumerate(records)
            ),
            return_exceptions=True,
        )
        winners = [records[i] for i, r in enumerate(results) if not isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert all(isinstance(r, TagRefused) for r in results if isinstance(r, BaseException))
        for tag in ("v1", "v1.0"):
            assert await tagged(handles[0], tag) == winners[0].digest
        # Only a push naming "latest" (an even one) can have created it; no refusal is
        # recorded for it, as the policy refused none of its changes.
        expected = [("created", None, winners[0].digest)] if winners[0] in records[::2] else []
        assert await changes(handles[0], "latest") == expected
    finally:
        for handle in handles:
            await handle.close()
