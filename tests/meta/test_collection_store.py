"""CollectionStore and InventoryStore (moorage.meta.protocols), against every backend."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from moorage.meta.errors import BlobBeingDeleted, UploadLeaseLost
from moorage.meta.protocols import MetadataStore
from moorage.model import (
    ExpiredTag,
    ManifestPulls,
    PinRecord,
    Reference,
    RepositoryContents,
    RepositorySweep,
    RunningImage,
    UsageCount,
)
from tests.meta.conftest import Opener
from tests.meta.helpers import ACTOR, digest, manifest, new_upload
from tests.support.clocks import SteppingClock

HOST = "registry.example:5000"


def pin(repository: str, image_digest: str, at: float) -> PinRecord:
    return PinRecord(
        at, "prod", "Deployment", "web", "container", "app", f"{repository}:1", repository,
        "1", image_digest, "local", "uid-1", "alice",
    )  # fmt: skip


def everything(contents: RepositoryContents) -> RepositorySweep:
    """A planner that calls everything garbage (the store must still keep what is needed)."""
    return RepositorySweep(contents.repository, contents.manifests, contents.blobs)


def nothing(contents: RepositoryContents) -> RepositorySweep:
    return RepositorySweep(contents.repository)


async def collect(
    meta: MetadataStore, planner: object = everything, *, apply: bool = True
) -> RepositorySweep:
    seen: list[RepositoryContents] = []

    def plan(contents: RepositoryContents) -> RepositorySweep:
        seen.append(contents)
        return planner(contents)  # type: ignore[operator, no-any-return]

    sweep = await meta.collect_repository(
        "repo", plan, pins_since=0.0, history_since=0.0, hosts=[HOST], apply=apply
    )
    assert len(seen) == 1
    return sweep


async def test_the_planner_sees_the_whole_repository(meta: MetadataStore) -> None:
    layer, other = digest("layer"), digest("other")
    await meta.add_blob("repo", layer, 10)
    await meta.add_blob("repo", other, 20)
    image = manifest("image", Reference("blob", layer))
    await meta.put_manifest("repo", image, "v1", ACTOR)
    await meta.put_manifest("repo", image, "v2", ACTOR)
    await meta.delete_tag("repo", "v2", ACTOR)
    await meta.record_pins([pin(f"{HOST}/repo", image.digest, 5.0), pin("elsewhere/repo", "x", 5)])
    running = RunningImage("prod", "Pod", "web-1", "app", "img", "repo", None, image.digest)
    await meta.replace_inventory(
        [running, dataclasses.replace(running, repository="other")], at=7.0
    )
    seen: list[RepositoryContents] = []

    def plan(contents: RepositoryContents) -> RepositorySweep:
        seen.append(contents)
        return RepositorySweep(contents.repository)

    await meta.collect_repository(
        "repo", plan, pins_since=0.0, history_since=0.0, hosts=[HOST], apply=True
    )
    contents = seen[0]
    assert [m.digest for m in contents.manifests] == [image.digest]
    assert contents.manifests[0].references == (Reference("blob", layer),)
    assert contents.tags == (("v1", image.digest),)
    assert sorted((b.digest, b.size) for b in contents.blobs) == sorted([(layer, 10), (other, 20)])
    assert [p.digest for p in contents.pins] == [image.digest]
    assert {(h.tag, h.digest) for h in contents.history} == {
        ("v1", image.digest),
        ("v2", image.digest),
    }
    assert contents.running == (running,)
    assert await meta.inventory() == (
        7.0,
        [running, dataclasses.replace(running, repository="other")],
    )


async def test_windows_limit_pins_and_history(meta: MetadataStore, clock: SteppingClock) -> None:
    image = manifest("image")
    await meta.put_manifest("repo", image, "old", ACTOR)
    await meta.record_pins([pin(f"{HOST}/repo", image.digest, clock.now)])
    clock.advance(100)
    since = clock.now
    await meta.put_manifest("repo", image, "new", ACTOR)
    seen: list[RepositoryContents] = []

    def plan(contents: RepositoryContents) -> RepositorySweep:
        seen.append(contents)
        return RepositorySweep(contents.repository)

    await meta.collect_repository(
        "repo", plan, pins_since=since, history_since=since, hosts=[HOST], apply=False
    )
    assert seen[0].pins == ()
    assert [h.tag for h in seen[0].history] == ["new"]


async def test_sweep_deletes_garbage_and_never_what_is_needed(meta: MetadataStore) -> None:
    layer, loose, spare = digest("layer"), digest("loose"), digest("spare")
    for blob in (layer, loose, spare):
        await meta.add_blob("repo", blob, 1)
    image = manifest("image", Reference("blob", layer))
    index = manifest("index", Reference("manifest", image.digest))
    orphan = manifest("orphan", Reference("blob", loose))
    await meta.put_manifest("repo", image, (), ACTOR)
    await meta.put_manifest("repo", index, "v1", ACTOR)
    await meta.put_manifest("repo", orphan, (), ACTOR)

    dry = await collect(meta, apply=False)
    assert {m.digest for m in dry.manifests} == {orphan.digest}
    assert await meta.get_manifest("repo", orphan.digest) is not None

    sweep = await collect(meta)
    # The tagged index, the image it lists and the layer it uses stay, whatever the planner.
    assert {m.digest for m in sweep.manifests} == {orphan.digest}
    assert {b.digest for b in sweep.blobs} == {loose, spare}
    assert await meta.get_manifest("repo", orphan.digest) is None
    assert await meta.get_manifest("repo", image.digest) is not None
    assert (await meta.resolve_tag("repo", "v1")).digest == index.digest  # type: ignore[union-attr]
    assert await meta.blob_size("repo", layer) == 1
    assert await meta.blob_size("repo", loose) is None

    assert await collect(meta, nothing) == RepositorySweep("repo")
    missing = await meta.collect_repository(
        "none", everything, pins_since=0, history_since=0, hosts=[], apply=True
    )
    assert missing == RepositorySweep("none")


async def test_a_sweep_removes_the_tags_it_names_and_forgets_pulls_of_what_it_deletes(
    meta: MetadataStore,
) -> None:
    image, loose = manifest("image"), manifest("loose")
    await meta.put_manifest("repo", image, ["a", "b"], ACTOR)
    await meta.put_manifest("repo", loose, (), ACTOR)
    pulls = (ManifestPulls(image.digest, 1, 5.0), ManifestPulls(loose.digest, 2, 6.0))
    await meta.record_usage([UsageCount("repo", pulls=3, last_pull=6.0, manifests=pulls)])

    def expire(contents: RepositoryContents) -> RepositorySweep:
        assert dict(contents.last_pulls) == {image.digest: 5.0, loose.digest: 6.0}
        assert {tag for tag, _ in contents.tagged_at} == {"a", "b"}
        gone = [
            ExpiredTag("a", image.digest, "rule", "why"),
            ExpiredTag("b", loose.digest, "rule", "not where the tag points: kept"),
            ExpiredTag("c", image.digest, "rule", "no such tag: nothing"),
        ]
        loose_only = tuple(m for m in contents.manifests if m.digest == loose.digest)
        return RepositorySweep(contents.repository, loose_only, tags=tuple(gone))

    sweep = await collect(meta, expire)
    assert [t.tag for t in sweep.tags] == ["a"]
    assert await meta.resolve_tag("repo", "a") is None
    assert (await meta.resolve_tag("repo", "b")).digest == image.digest  # type: ignore[union-attr]
    (event, *_) = await meta.tag_history("repo", "a", None, None)
    assert (event.action, event.old_digest, event.address, event.rule, event.reason) == (
        "deleted",
        image.digest,
        "gc",
        "rule",
        "why",
    )
    assert await meta.manifest_pulls("repo") == [ManifestPulls(image.digest, 1, 5.0)]


async def test_retired_blobs_go_in_three_steps(meta: MetadataStore, clock: SteppingClock) -> None:
    kept, gone = digest("kept"), digest("gone")
    await meta.add_blob("repo", kept, 1)
    await meta.add_blob("repo", gone, 2)
    await meta.unlink_blob("repo", gone)
    retired = await meta.retire_blobs(clock.now)
    assert [(d.digest, d.size, d.deleting) for d in retired] == [(gone, 2, False)]
    assert await meta.find_blob(gone) is None
    assert await meta.find_blob(kept) == 1
    assert await meta.retire_blobs(clock.now) == []
    assert [d.digest for d in await meta.blob_deletions()] == [gone]

    # Not before the deletion is older than ``before``.
    assert await meta.start_deleting([gone], retired[0].since, clock(), 0, 900) == []
    clock.advance(10)
    marked = await meta.start_deleting([gone, kept], clock.now, clock(), 0, 900)
    assert [(d.digest, d.deleting) for d in marked] == [(gone, True)]
    # Another collector leaves the mark alone until it is stale, then takes it over...
    assert await meta.start_deleting([gone], clock.now, clock(), 0, 900) == []
    clock.advance(1000)
    again = await meta.start_deleting([gone], 0.0, clock(), 0, 900)
    assert [d.digest for d in again] == [gone]
    # ... and the first, finishing late, does not remove the second's mark.
    await meta.finish_deleting(marked)
    assert [d.marked_at for d in await meta.blob_deletions()] == [again[0].marked_at]
    await meta.finish_deleting(again)
    assert await meta.blob_deletions() == []


async def test_retiring_many_blobs_takes_every_one(meta: MetadataStore) -> None:
    """More than one batch (500 a transaction): each unlinked blob once, linked ones kept."""
    gone = [digest(f"gone-{n}") for n in range(1234)]
    kept = [digest(f"kept-{n}") for n in range(10)]
    for blob in (*gone, *kept):
        await meta.add_blob("repo", blob, 1)
    for blob in gone:
        await meta.unlink_blob("repo", blob)
    retired = await meta.retire_blobs(0.0)
    assert sorted(d.digest for d in retired) == sorted(gone)
    assert all([await meta.find_blob(blob) == 1 for blob in kept])
    assert await meta.retire_blobs(0.0) == []


async def test_mounting_a_retired_blob_finds_nothing(meta: MetadataStore) -> None:
    blob = digest("blob")
    await meta.add_blob("src", blob, 1)
    await meta.unlink_blob("src", blob)
    await meta.retire_blobs(0.0)
    assert await meta.mount_blob("dst", blob, None) is None
    assert await meta.blob_size("dst", blob) is None


async def test_an_upload_completing_revives_a_retired_blob(
    meta: MetadataStore, clock: SteppingClock
) -> None:
    blob = digest("blob")
    await meta.add_blob("repo", blob, 3)
    await meta.unlink_blob("repo", blob)
    await meta.retire_blobs(clock.now)
    await meta.create_upload(new_upload())
    upload = await meta.acquire_upload(new_upload().id, "repo", None, clock(), 30, completing=blob)
    assert upload.digest == blob
    await meta.complete_upload(upload.id, upload.lease_until, blob, 3, clock())
    assert await meta.blob_size("repo", blob) == 3
    assert await meta.blob_deletions() == []
    assert await meta.get_upload(upload.id, "repo") is None


async def test_nothing_completes_as_a_blob_being_deleted(
    meta: MetadataStore, clock: SteppingClock
) -> None:
    blob = digest("blob")
    await meta.add_blob("repo", blob, 3)
    await meta.unlink_blob("repo", blob)
    await meta.retire_blobs(clock.now)
    first = new_upload()
    await meta.create_upload(first)
    upload = await meta.acquire_upload(first.id, "repo", None, clock(), 30)
    clock.advance(1)
    assert await meta.start_deleting([blob], clock.now, clock(), 0, 900) != []

    with pytest.raises(BlobBeingDeleted):
        await meta.complete_upload(upload.id, upload.lease_until, blob, 3, clock())
    await meta.release_upload(upload.id, upload.lease_until, 0, None, clock())
    with pytest.raises(BlobBeingDeleted):
        await meta.acquire_upload(first.id, "repo", None, clock(), 30, completing=blob)
    assert (await meta.get_upload(first.id, "repo")).lease_until == 0  # type: ignore[union-attr]
    single = dataclasses.replace(
        new_upload("6f1c3c6e-0000-4000-8000-000000000002"), digest=blob, lease_until=clock() + 30
    )
    with pytest.raises(BlobBeingDeleted):
        await meta.create_upload(single)
    assert await meta.get_upload(single.id, "repo") is None
    assert await meta.find_blob(blob) is None

    await meta.finish_deleting(await meta.blob_deletions())
    upload = await meta.acquire_upload(first.id, "repo", None, clock(), 30, completing=blob)
    await meta.complete_upload(upload.id, upload.lease_until, blob, 3, clock())
    assert await meta.blob_size("repo", blob) == 3


async def test_an_upload_completing_as_a_digest_keeps_its_bytes(
    meta: MetadataStore, clock: SteppingClock
) -> None:
    blob = digest("blob")
    await meta.orphaned_blobs([(blob, 3)], clock.now)
    await meta.create_upload(new_upload())
    upload = await meta.acquire_upload(new_upload().id, "repo", None, clock(), 30, completing=blob)
    clock.advance(10)
    assert await meta.start_deleting([blob], clock.now, clock(), 0, 900) == []
    # Once the lease has run out (past the margin), nothing protects the bytes any more...
    clock.advance(40)
    assert await meta.start_deleting([blob], clock.now, clock(), 5, 900) != []
    # ... and the upload cannot record them.
    with pytest.raises((UploadLeaseLost, BlobBeingDeleted)):
        await meta.complete_upload(upload.id, upload.lease_until, blob, 3, clock())


async def test_completing_needs_the_lease(meta: MetadataStore, clock: SteppingClock) -> None:
    await meta.create_upload(new_upload())
    upload = await meta.acquire_upload(new_upload().id, "repo", None, clock(), 30)
    with pytest.raises(UploadLeaseLost):
        await meta.complete_upload(upload.id, upload.lease_until + 1, digest("b"), 1, clock())
    clock.advance(31)
    with pytest.raises(UploadLeaseLost):
        await meta.complete_upload(upload.id, upload.lease_until, digest("b"), 1, clock())
    assert await meta.find_blob(digest("b")) is None
    assert await meta.get_upload(upload.id, "repo") is not None


async def test_orphaned_bytes_are_those_no_record_names(
    meta: MetadataStore, clock: SteppingClock
) -> None:
    known, unknown = digest("known"), digest("unknown")
    await meta.add_blob("repo", known, 1)
    would = await meta.orphaned_blobs([(known, 1), (unknown, 2)], clock.now, apply=False)
    assert [(d.digest, d.size) for d in would] == [(unknown, 2)]
    assert await meta.blob_deletions() == []
    found = await meta.orphaned_blobs([(known, 1), (unknown, 2)], clock.now)
    assert [(d.digest, d.size) for d in found] == [(unknown, 2)]
    assert await meta.orphaned_blobs([(unknown, 2)], clock.now) == []
    # An upload of the bytes after all makes them a blob again.
    await meta.add_blob("repo", unknown, 2)
    assert await meta.blob_deletions() == []


async def test_upload_ids(meta: MetadataStore) -> None:
    assert await meta.upload_ids() == set()
    await meta.create_upload(new_upload())
    assert await meta.upload_ids() == {new_upload().id}


async def test_inventory_is_replaced_whole(meta: MetadataStore) -> None:
    assert await meta.inventory() == (None, [])
    image = RunningImage("ns", "Job", "j", "c", "host/repo:1", "repo", "1", None)
    await meta.replace_inventory([image], 10.0)
    await meta.replace_inventory([dataclasses.replace(image, name="k")], 20.0)
    assert await meta.inventory() == (20.0, [dataclasses.replace(image, name="k")])


async def test_deleting_and_completing_race_safely(open_meta: Opener, clock: SteppingClock) -> None:
    """Of a collector marking a blob as deleting and an upload taking its lease to complete
    as it, on two handles (two processes or replicas), exactly one wins."""
    stores = [open_meta(), open_meta()]
    collector, pusher = stores
    try:
        for round_ in range(20):
            blob = digest(f"race-{round_}")
            await collector.orphaned_blobs([(blob, 1)], clock.now - 100)
            upload = new_upload(f"6f1c3c6e-0000-4000-8000-{round_:012d}")
            await pusher.create_upload(upload)

            async def acquire(upload_id: str = upload.id, blob: str = blob) -> bool:
                try:
                    await pusher.acquire_upload(
                        upload_id, "repo", None, clock(), 30, completing=blob
                    )
                except BlobBeingDeleted:
                    return False
                return True

            marked, acquired = await asyncio.gather(
                collector.start_deleting([blob], clock.now, clock(), 0, 900), acquire()
            )
            assert bool(marked) != acquired, round_
    finally:
        for store in stores:
            await store.close()
