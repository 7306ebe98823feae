"""Garbage collection (moorage.registry.collector) of a real registry, pushed to over HTTP:
every storage driver with SQLite, and the filesystem and S3 with PostgreSQL.

The registry's clock moves instead of the tests waiting: what was pushed becomes old enough
to collect when the test says so.
"""

from __future__ import annotations

import uuid

import pytest

from moorage.digest import Digest
from moorage.model import PinRecord, RunningImage
from moorage.registry.collector import LEFTOVER_AGE, CollectionReport, InventoryTooOld
from moorage.registry.layout import blob_key, upload_key
from tests.support.app import (
    RegistryEnv,
    assert_image_intact,
    get_manifest,
    push_blob,
    push_image,
    push_seeded,
)
from tests.support.collecting import (
    COMBINATIONS,
    GRACE,
    HOST,
    UNTAGGED,
    WINDOW,
    MakeGcEnv,
    collect,
)
from tests.support.images import Image, artifact_of, index_of, seeded_image


@pytest.fixture(params=COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
async def gc_env(request: pytest.FixtureRequest, make_gc_env: MakeGcEnv) -> RegistryEnv:
    env: RegistryEnv = await make_gc_env(*request.param)
    return env


def pin(env: RegistryEnv, image: Image) -> PinRecord:
    return PinRecord(
        env.clock.now, "prod", "Deployment", "web", "container", "app",
        f"{HOST}/team/app:old", f"{HOST}/team/app", "old", image.digest, "local", "uid", "alice",
    )  # fmt: skip


def reasons(report: CollectionReport, digest: str) -> tuple[str, ...]:
    for sweep in report.repositories:
        for manifest, why in sweep.kept_manifests:
            if manifest.digest == digest:
                return why
    return ()


async def stored(env: RegistryEnv, digest: str) -> bool:
    return await env.registry.storage.stat(blob_key(Digest.parse(digest))) is not None


async def test_keeps_every_reason_and_collects_the_rest(gc_env: RegistryEnv) -> None:
    env, client = gc_env, gc_env.client
    tagged = await push_seeded(client, "team/app", "v1", "tagged")
    moved = await push_seeded(client, "team/app", "latest", "moved")
    newer = await push_seeded(client, "team/app", "latest", "newer")
    loose = await push_image(client, "team/app", seeded_image("loose"))
    pinned = await push_image(client, "team/app", seeded_image("pinned"))
    running = await push_image(client, "team/app", seeded_image("running"))
    signature = await push_image(
        client, "team/app", artifact_of(tagged, "application/vnd.test.sig", b"signed")
    )
    multi = await push_image(
        client,
        "team/app",
        index_of([seeded_image("arm", architecture="arm64"), seeded_image("amd")]),
        "multi",
    )
    stray = await push_blob(client, "team/app", b"bytes no manifest uses")
    await env.registry.pins.record([pin(env, pinned)])
    await env.registry.meta.replace_inventory(
        [RunningImage("prod", "Pod", "web-1", "app", "i", "team/app", None, running.digest)],
        env.clock.now,
    )
    env.clock.advance(200)
    young = await push_image(client, "team/young", seeded_image("young"))

    env.clock.advance(UNTAGGED - 100)
    young_too = await push_image(client, "team/young", seeded_image("young-too"))
    report = await collect(env)

    loose_blobs = {b.digest for b in loose.all_blobs}
    assert [m.digest for s in report.repositories for m in s.manifests] == [loose.digest]
    assert {b.digest for s in report.repositories for b in s.blobs} == {*loose_blobs, stray}
    assert {d.digest for d in report.retired} == {*loose_blobs, stray}
    assert report.deleted == []  # the bytes wait for the grace period
    assert reasons(report, tagged.digest) == ("tag team/app:v1",)
    assert reasons(report, moved.digest)[0].startswith("tag team/app:latest pointed at it")
    assert reasons(report, pinned.digest)[0] == "pinned 62 min ago in prod/Deployment/web"
    assert reasons(report, running.digest) == ("running in prod/Pod/web-1",)
    assert reasons(report, signature.digest)[0].startswith("refers to sha256:")
    assert all(reasons(report, child.digest) for child in multi.children)
    assert reasons(report, young.digest)[0] == "untagged for 58 min, less than gc.untagged_after"
    assert reasons(report, young_too.digest)[0].startswith("pushed")

    resp, _ = await get_manifest(client, "team/app", loose.digest)
    assert resp.status == 404
    assert all([await stored(env, d) for d in loose_blobs])  # not yet
    for image, tags in (
        (tagged, ["v1"]),
        (moved, []),
        (newer, ["latest"]),
        (pinned, []),
        (running, []),
        (signature, []),
        (multi, ["multi"]),
    ):
        await assert_image_intact(client, "team/app", image, tags)

    env.clock.advance(GRACE + 1)
    report = await collect(env)
    assert {d.digest for d in report.deleted} == {*loose_blobs, stray}
    assert report.bytes_freed == sum(d.size for d in report.deleted)
    assert not any([await stored(env, d) for d in (*loose_blobs, stray)])
    assert await env.registry.meta.blob_deletions() == []

    # Past the windows, what was pinned and what a tag pointed at go too; what runs stays.
    env.clock.advance(WINDOW)
    report = await collect(env)
    gone = {m.digest for s in report.repositories for m in s.manifests}
    assert gone == {moved.digest, pinned.digest, young.digest, young_too.digest}
    for image, tags in ((tagged, ["v1"]), (running, []), (signature, []), (multi, ["multi"])):
        await assert_image_intact(client, "team/app", image, tags)


async def test_a_dry_run_changes_nothing(gc_env: RegistryEnv) -> None:
    env, client = gc_env, gc_env.client
    await push_seeded(client, "team/app", "v1", "kept")
    loose = await push_image(client, "team/app", seeded_image("loose"))
    env.clock.advance(UNTAGGED + 100)

    dry = await collect(env, dry_run=True)
    assert dry.dry_run
    assert [m.digest for s in dry.repositories for m in s.manifests] == [loose.digest]
    assert {d.digest for d in dry.retired} == {b.digest for b in loose.all_blobs}
    resp, _ = await get_manifest(client, "team/app", loose.digest)
    assert resp.status == 200
    assert await env.registry.meta.blob_deletions() == []

    real = await collect(env)
    assert [s.manifests for s in real.repositories] == [s.manifests for s in dry.repositories]
    assert {d.digest for d in real.retired} == {d.digest for d in dry.retired}


#: Drivers that can hold bytes no record names (the memory driver loses nothing behind the
#: metadata's back: both live and die with the process).
PERSISTENT = [c for c in COMBINATIONS if c[0] != "memory"]


@pytest.mark.parametrize("combination", PERSISTENT, ids=["-".join(c) for c in PERSISTENT])
async def test_storage_garbage_goes_too(
    make_gc_env: MakeGcEnv, combination: tuple[str, str]
) -> None:
    env = await make_gc_env(*combination)
    client = env.client
    storage = env.registry.storage
    kept = await push_seeded(client, "team/app", "v1", "kept")
    orphan = Digest.of(b"bytes stored, never recorded")
    await storage.put(blob_key(orphan), b"bytes stored, never recorded")
    stale_upload = upload_key(str(uuid.uuid4()))
    await storage.put(stale_upload, b"left by a session that is gone")
    resp = await client.post("/v2/team/app/blobs/uploads/", data=b"")
    live_upload = upload_key(resp.headers["Location"].rsplit("/", 1)[-1])
    env.clock.advance(LEFTOVER_AGE + 100)  # upload data of no session waits longer than GRACE

    report = await collect(env)
    assert [d.digest for d in report.orphaned] == [str(orphan)]
    assert [o.key for o in report.upload_data] == [stale_upload]
    assert await storage.stat(stale_upload) is None
    assert await storage.stat(live_upload) is not None
    assert await stored(env, str(orphan))

    env.clock.advance(GRACE + 1)
    report = await collect(env)
    assert [d.digest for d in report.deleted] == [str(orphan)]
    assert not await stored(env, str(orphan))
    await assert_image_intact(client, "team/app", kept, ["v1"])


async def test_an_old_inventory_stops_a_collection(make_gc_env: MakeGcEnv) -> None:
    env: RegistryEnv = await make_gc_env("filesystem", "sqlite", inventory_max_age=1800)
    loose = await push_image(env.client, "team/app", seeded_image("loose"))
    await env.registry.meta.replace_inventory([], env.clock.now)
    env.clock.advance(UNTAGGED + 100)
    with pytest.raises(InventoryTooOld, match="the cluster inventory is 3"):
        await collect(env)
    resp, _ = await get_manifest(env.client, "team/app", loose.digest)
    assert resp.status == 200
    await env.registry.meta.replace_inventory([], env.clock.now)
    report = await collect(env)
    assert [m.digest for s in report.repositories for m in s.manifests] == [loose.digest]
