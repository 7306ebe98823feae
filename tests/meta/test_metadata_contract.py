"""The metadata contract (moorage.meta.base), run against every backend."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from moorage.meta.base import (
    MetadataStore,
    MissingReferences,
    UploadBusy,
    UploadNotFound,
    UploadOffsetMismatch,
)
from moorage.model import Actor, ManifestRecord, Reference, Upload
from tests.meta.conftest import Opener

ACTOR = Actor("tester", "127.0.0.1", "request-1")


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def manifest(
    seed: str, *refs: Reference, subject: str | None = None, artifact_type: str | None = None
) -> ManifestRecord:
    payload = f'{{"seed": "{seed}"}}'.encode()
    return ManifestRecord(
        digest="sha256:" + hashlib.sha256(payload).hexdigest(),
        media_type="application/vnd.oci.image.manifest.v1+json",
        payload=payload,
        artifact_type=artifact_type,
        subject=subject,
        annotations='{"k": "v"}' if subject else None,
        references=refs,
    )


async def test_blobs_are_linked_per_repository(meta: MetadataStore) -> None:
    blob = digest("layer")
    assert await meta.find_blob(blob) is None
    await meta.add_blob("team/app", blob, 42)
    assert await meta.blob_size("team/app", blob) == 42
    assert await meta.blob_size("team/other", blob) is None
    assert await meta.find_blob(blob) == 42
    await meta.add_blob("team/app", blob, 42)  # idempotent
    assert await meta.unlink_blob("team/app", blob) is True
    assert await meta.unlink_blob("team/app", blob) is False
    assert await meta.blob_size("team/app", blob) is None


async def test_mount_from_source_or_anywhere(meta: MetadataStore) -> None:
    blob = digest("shared")
    await meta.add_blob("src", blob, 7)
    assert await meta.mount_blob("dst", blob, "elsewhere") is None
    assert await meta.blob_size("dst", blob) is None
    assert await meta.mount_blob("dst", blob, "src") == 7
    assert await meta.blob_size("dst", blob) == 7
    assert await meta.mount_blob("third", blob, None) == 7
    assert await meta.mount_blob("fourth", digest("unknown"), None) is None


async def test_put_manifest_requires_references(meta: MetadataStore) -> None:
    config, layer = digest("config"), digest("layer")
    await meta.add_blob("repo", config, 10)
    record = manifest("m", Reference("blob", config), Reference("blob", layer))
    with pytest.raises(MissingReferences) as info:
        await meta.put_manifest("repo", record, "v1", ACTOR)
    assert info.value.missing == (Reference("blob", layer),)
    assert await meta.get_manifest("repo", record.digest) is None
    assert await meta.list_tags("repo", None, None) == []
    await meta.add_blob("repo", layer, 20)
    result = await meta.put_manifest("repo", record, "v1", ACTOR)
    assert result.previous_digest is None
    stored = await meta.resolve_tag("repo", "v1")
    assert stored is not None
    assert stored.payload == record.payload
    assert stored.media_type == record.media_type


async def test_index_requires_child_manifests(meta: MetadataStore) -> None:
    child = manifest("child")
    index = manifest("index", Reference("manifest", child.digest))
    with pytest.raises(MissingReferences):
        await meta.put_manifest("repo", index, (), ACTOR)
    await meta.put_manifest("repo", child, (), ACTOR)
    await meta.put_manifest("repo", index, "multi", ACTOR)
    resolved = await meta.resolve_tag("repo", "multi")
    assert resolved is not None and resolved.digest == index.digest


async def test_moving_a_tag_reports_previous_digest(meta: MetadataStore) -> None:
    first, second = manifest("one"), manifest("two")
    await meta.put_manifest("repo", first, "latest", ACTOR)
    result = await meta.put_manifest("repo", second, "latest", ACTOR)
    assert result.previous_digest == first.digest
    resolved = await meta.resolve_tag("repo", "latest")
    assert resolved is not None and resolved.digest == second.digest
    again = await meta.put_manifest("repo", second, "latest", ACTOR)
    assert again.previous_digest == second.digest


async def test_delete_manifest_removes_its_tags(meta: MetadataStore) -> None:
    record = manifest("gone")
    await meta.put_manifest("repo", record, "a", ACTOR)
    await meta.put_manifest("repo", record, "b", ACTOR)
    assert await meta.delete_manifest("repo", record.digest, ACTOR) is True
    assert await meta.get_manifest("repo", record.digest) is None
    assert await meta.resolve_tag("repo", "a") is None
    assert await meta.list_tags("repo", None, None) == []
    assert await meta.delete_manifest("repo", record.digest, ACTOR) is False
    assert await meta.delete_manifest("no-such-repo", record.digest, ACTOR) is False


async def test_delete_tag_keeps_manifest(meta: MetadataStore) -> None:
    record = manifest("kept")
    await meta.put_manifest("repo", record, "t", ACTOR)
    assert await meta.delete_tag("repo", "t", ACTOR) is True
    assert await meta.delete_tag("repo", "t", ACTOR) is False
    assert await meta.get_manifest("repo", record.digest) is not None


async def test_tags_and_repositories_are_listed_in_order(meta: MetadataStore) -> None:
    record = manifest("x")
    for tag in ["b", "a", "C", "c", "1.0", "latest"]:
        await meta.put_manifest("repo", record, tag, ACTOR)
    assert await meta.list_tags("repo", None, None) == ["1.0", "C", "a", "b", "c", "latest"]
    assert await meta.list_tags("repo", 2, None) == ["1.0", "C"]
    assert await meta.list_tags("repo", 2, "C") == ["a", "b"]
    assert await meta.list_tags("repo", None, "c") == ["latest"]
    assert await meta.list_tags("missing", None, None) == []
    assert await meta.repository_exists("repo")
    assert not await meta.repository_exists("missing")
    for name in ["z/z", "a/b", "m"]:
        await meta.add_blob(name, digest("b"), 1)
    assert await meta.list_repositories(None, None) == ["a/b", "m", "repo", "z/z"]
    assert await meta.list_repositories(2, "a/b") == ["m", "repo"]


async def test_referrers_filter_by_artifact_type(meta: MetadataStore) -> None:
    subject = manifest("subject")
    await meta.put_manifest("repo", subject, (), ACTOR)
    sig = manifest("sig", subject=subject.digest, artifact_type="application/vnd.example.sig")
    sbom = manifest("sbom", subject=subject.digest, artifact_type="application/vnd.example.sbom")
    await meta.put_manifest("repo", sig, (), ACTOR)
    await meta.put_manifest("repo", sbom, (), ACTOR)
    everything = await meta.referrers("repo", subject.digest, None)
    assert {r.digest for r in everything} == {sig.digest, sbom.digest}
    assert all(r.annotations == '{"k": "v"}' and r.size > 0 for r in everything)
    only = await meta.referrers("repo", subject.digest, "application/vnd.example.sbom")
    assert [r.digest for r in only] == [sbom.digest]
    assert await meta.referrers("repo", digest("none"), None) == []
    assert await meta.referrers("other", subject.digest, None) == []


def new_upload(
    upload_id: str = "6f1c3c6e-0000-4000-8000-000000000001", repo: str = "repo"
) -> Upload:
    return Upload(upload_id, repo, 0, b"state", 100.0, 100.0)


async def test_upload_lease_and_progress(meta: MetadataStore) -> None:
    upload = new_upload()
    await meta.create_upload(upload)
    assert await meta.get_upload(upload.id, "repo") == upload
    assert await meta.get_upload(upload.id, "other") is None
    with pytest.raises(UploadNotFound):
        await meta.acquire_upload(upload.id, "other", None, 101.0, 60)
    taken = await meta.acquire_upload(upload.id, "repo", 0, 101.0, 60)
    assert taken.lease_until == 161.0
    with pytest.raises(UploadBusy):
        await meta.acquire_upload(upload.id, "repo", 0, 102.0, 60)
    assert await meta.release_upload(upload.id, 161.0, 500, b"state2", 103.0)
    with pytest.raises(UploadOffsetMismatch) as info:
        await meta.acquire_upload(upload.id, "repo", 0, 104.0, 60)
    assert info.value.offset == 500
    again = await meta.acquire_upload(upload.id, "repo", 500, 104.0, 60)
    assert (again.offset, again.hash_state) == (500, b"state2")
    assert again.lease_until == 164.0
    assert await meta.renew_upload(upload.id, 164.0, 190.0)
    assert not await meta.renew_upload(upload.id, 164.0, 195.0)
    # A lease that ran out (its holder died) can be taken over; the old holder is fenced off.
    taken_over = await meta.acquire_upload(upload.id, "repo", None, 200.0, 60)
    assert taken_over.offset == 500
    assert not await meta.renew_upload(upload.id, 190.0, 300.0)
    assert not await meta.release_upload(upload.id, 190.0, 999, None, 201.0)
    current = await meta.get_upload(upload.id, "repo")
    assert current is not None and current.offset == 500 and current.lease_until == 260.0
    await meta.delete_upload(upload.id)
    assert await meta.get_upload(upload.id, "repo") is None


async def test_expired_uploads(meta: MetadataStore) -> None:
    old = new_upload("6f1c3c6e-0000-4000-8000-000000000002")
    await meta.create_upload(old)
    fresh = Upload("6f1c3c6e-0000-4000-8000-000000000003", "repo", 0, None, 1e12, 1e12)
    await meta.create_upload(fresh)
    expired = await meta.expired_uploads(updated_before=1000.0)
    assert [u.id for u in expired] == [old.id]


async def test_handles_share_state(open_meta: Opener) -> None:
    """Two handles (as in two worker processes) see each other's writes at once."""
    first, second = open_meta(), open_meta()
    try:
        record = manifest("shared")
        await first.put_manifest("repo", record, "t", ACTOR)
        resolved = await second.resolve_tag("repo", "t")
        assert resolved is not None and resolved.digest == record.digest
        await second.delete_tag("repo", "t", ACTOR)
        assert await first.resolve_tag("repo", "t") is None
    finally:
        await first.close()
        await second.close()


async def test_only_one_handle_wins_an_upload_lease(open_meta: Opener) -> None:
    handles = [open_meta() for _ in range(4)]
    try:
        upload = new_upload("6f1c3c6e-0000-4000-8000-000000000004")
        await handles[0].create_upload(upload)
        results = await asyncio.gather(
            *(h.acquire_upload(upload.id, "repo", 0, 150.0, 60) for h in handles),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Upload) for r in results) == 1
        assert sum(isinstance(r, UploadBusy) for r in results) == 3
    finally:
        for handle in handles:
            await handle.close()


async def test_upload_checkpoints_keep_the_lease_and_are_fenced(meta: MetadataStore) -> None:
    upload = new_upload("6f1c3c6e-0000-4000-8000-000000000005")
    await meta.create_upload(upload)
    held = await meta.acquire_upload(upload.id, "repo", 0, 101.0, 60, "host/boot/ns/10/500")
    assert (held.lease_until, held.lease_owner) == (161.0, "host/boot/ns/10/500")
    assert await meta.checkpoint_upload(upload.id, 161.0, 4096, b"at-4096", 110.0)
    current = await meta.get_upload(upload.id, "repo")
    assert current is not None
    assert (current.offset, current.hash_state, current.updated_at) == (4096, b"at-4096", 110.0)
    # Still held, by the same request, which may checkpoint again and renew.
    assert (current.lease_until, current.lease_owner) == (161.0, "host/boot/ns/10/500")
    with pytest.raises(UploadBusy):
        await meta.acquire_upload(upload.id, "repo", None, 120.0, 60, "other")
    assert await meta.checkpoint_upload(upload.id, 161.0, 8192, b"at-8192", 111.0)
    # A wrong lease value (a request that lost the lease) changes nothing.
    assert not await meta.checkpoint_upload(upload.id, 150.0, 9999, b"stale", 112.0)
    current = await meta.get_upload(upload.id, "repo")
    assert current is not None and (current.offset, current.hash_state) == (8192, b"at-8192")
    # The lease taken over, the old holder can no longer record anything.
    await meta.acquire_upload(upload.id, "repo", 8192, 200.0, 60, "new")
    assert not await meta.checkpoint_upload(upload.id, 161.0, 12288, b"late", 201.0)
    assert await meta.release_upload(upload.id, 260.0, 8192, b"at-8192", 202.0)
    current = await meta.get_upload(upload.id, "repo")
    assert current is not None
    assert (current.offset, current.lease_until, current.lease_owner) == (8192, 0.0, "")


async def test_upload_lease_names_its_holder_and_a_dead_one_is_taken_over(
    meta: MetadataStore,
) -> None:
    upload = new_upload("6f1c3c6e-0000-4000-8000-000000000006")
    await meta.create_upload(upload)
    await meta.acquire_upload(upload.id, "repo", None, 101.0, 60, "dead-holder")
    with pytest.raises(UploadBusy) as info:
        await meta.acquire_upload(upload.id, "repo", None, 102.0, 60, "me")
    assert (info.value.owner, info.value.lease_until) == ("dead-holder", 161.0)
    # Taking over compares the holder's lease value: another value is still busy...
    with pytest.raises(UploadBusy):
        await meta.acquire_upload(upload.id, "repo", None, 102.0, 60, "me", take_over=160.0)
    # ... and an offset that does not match is refused as usual.
    with pytest.raises(UploadOffsetMismatch):
        await meta.acquire_upload(upload.id, "repo", 5, 102.0, 60, "me", take_over=161.0)
    taken = await meta.acquire_upload(upload.id, "repo", 0, 102.0, 60, "me", take_over=161.0)
    assert (taken.lease_until, taken.lease_owner) == (162.0, "me")
    # The dead holder's token no longer works.
    assert not await meta.renew_upload(upload.id, 161.0, 300.0)
    assert not await meta.release_upload(upload.id, 161.0, 10, None, 103.0)
    current = await meta.get_upload(upload.id, "repo")
    assert current is not None and (current.lease_until, current.lease_owner) == (162.0, "me")


async def test_only_one_handle_takes_over_a_dead_holder(open_meta: Opener) -> None:
    handles = [open_meta() for _ in range(4)]
    try:
        upload = new_upload("6f1c3c6e-0000-4000-8000-000000000007")
        await handles[0].create_upload(upload)
        await handles[0].acquire_upload(upload.id, "repo", 0, 150.0, 60, "dead")
        results = await asyncio.gather(
            *(
                h.acquire_upload(upload.id, "repo", 0, 151.0, 60, f"h{i}", take_over=210.0)
                for i, h in enumerate(handles)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Upload)]
        assert len(winners) == 1 and sum(isinstance(r, UploadBusy) for r in results) == 3
        current = await handles[1].get_upload(upload.id, "repo")
        assert current is not None and current.lease_owner == winners[0].lease_owner
    finally:
        for handle in handles:
            await handle.close()
