"""UploadStore (moorage.meta.protocols), against every backend: progress, and the lease that
lets one request write at a time."""

from __future__ import annotations

import asyncio

import pytest

from moorage.meta.errors import UploadBusy, UploadNotFound, UploadOffsetMismatch
from moorage.meta.protocols import MetadataStore
from moorage.model import Upload
from tests.meta.conftest import Opener
from tests.meta.helpers import new_upload


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
