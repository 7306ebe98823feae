"""moorage.registry.uploads: checkpoints while a body streams, clients that hang up mid-body,
and what completion keeps."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial

import pytest

from moorage.errors import ClientDisconnected
from moorage.registry.uploads import Uploads
from tests.registry.upload_bodies import (
    DATA,
    EVERY,
    body_of,
    digest_of,
    empty,
    hang_up_after,
    pieces,
)
from tests.support.waiting import wait_until_async


async def test_checkpoints_are_recorded_while_the_body_streams(checkpointed: Uploads) -> None:
    upload = await checkpointed.start("repo")
    seen: list[int] = []

    async def recorded() -> int:
        current = await checkpointed.meta.get_upload(upload.id, "repo")
        assert current is not None and current.lease_until > 0
        return current.offset

    async def reached(boundary: int) -> bool:
        offset = await recorded()
        assert offset <= boundary, f"recorded {offset}, past {boundary}"
        return offset == boundary

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        for part in pieces(DATA, 1):
            yield part
            sent += len(part)
            # Recorded at each boundary passed, while the request still streams (in the
            # background: the stream never waits for it).
            boundary = sent // EVERY * EVERY
            await wait_until_async(
                partial(reached, boundary), f"the checkpoint at {boundary} to be recorded"
            )
            seen.append(boundary)

    appended = await checkpointed.append("repo", upload.id, body())
    assert appended.offset == len(DATA)
    assert seen[-1] == len(DATA) // EVERY * EVERY
    assert checkpointed.counters.checkpoints == len(DATA) // EVERY
    size = await checkpointed.finish("repo", upload.id, digest_of(DATA), empty())
    assert size == len(DATA)


@pytest.mark.parametrize("hang_up_at", [1, EVERY - 1, EVERY, EVERY + 1, 5 * EVERY + 77])
async def test_a_client_that_hangs_up_leaves_the_upload_at_its_last_checkpoint(
    checkpointed: Uploads, hang_up_at: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "moorage.uploads")
    upload = await checkpointed.start("repo")
    with pytest.raises(ClientDisconnected):
        await checkpointed.append(
            "repo", upload.id, hang_up_after(pieces(DATA, hang_up_at), hang_up_at)
        )
    kept = hang_up_at // EVERY * EVERY
    current = await checkpointed.meta.get_upload(upload.id, "repo")
    assert current is not None and (current.offset, current.lease_until) == (kept, 0.0)
    assert checkpointed.counters.client_aborts == 1
    [record] = [r for r in caplog.records if "client aborted" in r.getMessage()]
    assert record.levelname == "INFO" and record.exc_info is None
    message = record.getMessage()
    assert upload.id in message and "repo" in message
    assert f"after {hang_up_at} bytes" in message and f"stays at byte {kept}" in message
    # The saved hash is that of exactly the kept bytes: resuming there gives the right blob.
    await checkpointed.append(
        "repo", upload.id, body_of(DATA[kept:]), start=kept, length=len(DATA) - kept
    )
    size = await checkpointed.finish("repo", upload.id, digest_of(DATA), empty())
    assert size == len(DATA)


async def test_a_single_post_whose_client_hangs_up_is_dropped(checkpointed: Uploads) -> None:
    with pytest.raises(ClientDisconnected):
        await checkpointed.monolithic(
            "repo",
            digest_of(DATA),
            hang_up_after(pieces(DATA, 3), 3 * EVERY + 5),
            length=len(DATA),
        )
    assert checkpointed.counters.client_aborts == 1
    assert await checkpointed.meta.expired_uploads(1e12) == []
    assert [key async for key in checkpointed.storage.list_keys("uploads/")] == []
