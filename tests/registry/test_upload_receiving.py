"""moorage.registry.upload_receiving: bytes are never written beside a writer still open."""

from __future__ import annotations

import pytest

from moorage.errors import RegistryError
from moorage.registry.layout import upload_key
from moorage.registry.uploads import Uploads
from tests.registry.upload_bodies import DATA, body_of


async def test_a_writer_still_open_past_its_lease_is_never_written_beside(
    checkpointed: Uploads,
) -> None:
    """The lease says nobody writes, but a writer is still open (its request stalled past
    the lease): a new request is refused, and can go on once that writer is gone."""
    upload = await checkpointed.start("repo")
    stalled = await checkpointed.storage.open_writer(upload_key(upload.id), 0)
    with pytest.raises(RegistryError) as info:
        await checkpointed.append("repo", upload.id, body_of(DATA))
    assert info.value.status == 416 and "another request" in info.value.message
    current = await checkpointed.meta.get_upload(upload.id, "repo")
    assert current is not None and (current.offset, current.lease_until) == (0, 0.0)
    await stalled.abort()
    appended = await checkpointed.append("repo", upload.id, body_of(DATA))
    assert appended.offset == len(DATA)
