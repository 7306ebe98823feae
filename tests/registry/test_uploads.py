"""moorage.registry.uploads: leases that outlive slow requests and fence off lost ones, are
taken over from dead holders; checkpoints; clients that hang up mid-body."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage import process_identity
from moorage.digest import Digest
from moorage.errors import ClientDisconnected, RegistryError
from moorage.meta.sqlite import SQLiteMetadata
from moorage.registry.layout import upload_key
from moorage.registry.uploads import ContentRange, Uploads
from moorage.storage.memory import MemoryDriver


async def slow_body(parts: list[bytes], pause: float) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(pause)
        yield part


@pytest.fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    yield Uploads(MemoryDriver(), meta, lease=0.3)
    await meta.close()


async def test_a_slow_request_keeps_its_lease(uploads: Uploads) -> None:
    upload = await uploads.start("repo")
    parts = [bytes([n]) * 1000 for n in range(8)]
    # 8 x 0.1 s: well past the 0.3 s lease, renewed every 0.1 s.
    appended = await uploads.append("repo", upload.id, slow_body(parts, 0.1), None, None)
    assert appended.offset == 8000
    data = b"".join(parts)
    size = await uploads.finish(
        "repo",
        upload.id,
        Digest("sha256", hashlib.sha256(data).hexdigest()),
        slow_body([], 0),
        None,
        None,
    )
    assert size == 8000


async def test_a_request_that_lost_its_lease_cannot_record_progress(uploads: Uploads) -> None:
    upload = await uploads.start("repo")

    async def stalled() -> AsyncIterator[bytes]:
        yield b"a" * 100
        # Another request takes the upload over once the lease has run out...
        await asyncio.sleep(0.4)
        taken = await uploads.meta.acquire_upload(upload.id, "repo", None, uploads.clock(), 60)
        assert taken.offset == 0
        yield b"b" * 100

    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, stalled(), None, None)
    assert info.value.status == 416
    current = await uploads.meta.get_upload(upload.id, "repo")
    assert current is not None and current.offset == 0 and current.lease_until > 0


# -- checkpoints, client aborts, dead holders -------------------------------------------------

KIB = 1024
EVERY = 64 * KIB
DATA = bytes(random.Random(7).randbytes(1_000_000))


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def pieces(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random places, as request bodies arrive."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def hang_up_after(parts: list[bytes], limit: int) -> AsyncIterator[bytes]:
    """Yield ``parts`` up to ``limit`` bytes, then fail as a client that hung up does."""
    sent = 0
    for part in parts:
        part = part[: limit - sent]
        if part:
            sent += len(part)
            yield part
        if sent >= limit:
            break
    raise ClientDisconnected(sent)


@pytest.fixture
async def checkpointed(tmp_path: Path) -> AsyncIterator[Uploads]:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    yield Uploads(MemoryDriver(), meta, lease=30, checkpoint_every=EVERY)
    await meta.close()


async def test_checkpoints_are_recorded_while_the_body_streams(checkpointed: Uploads) -> None:
    upload = await checkpointed.start("repo")
    seen: list[int] = []

    async def recorded() -> int:
        current = await checkpointed.meta.get_upload(upload.id, "repo")
        assert current is not None and current.lease_until > 0
        return current.offset

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        for part in pieces(DATA, 1):
            yield part
            sent += len(part)
            # Recorded at each boundary passed, while the request still streams (in the
            # background: the stream never waits for it).
            deadline = time.monotonic() + 10
            while (offset := await recorded()) != sent // EVERY * EVERY:
                assert offset < sent // EVERY * EVERY and time.monotonic() < deadline
                await asyncio.sleep(0.005)
            seen.append(offset)

    appended = await checkpointed.append("repo", upload.id, body(), None, None)
    assert appended.offset == len(DATA)
    assert seen[-1] == len(DATA) // EVERY * EVERY
    assert checkpointed.counters.checkpoints == len(DATA) // EVERY
    size = await checkpointed.finish("repo", upload.id, digest_of(DATA), empty(), None, None)
    assert size == len(DATA)


async def empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize("hang_up_at", [1, EVERY - 1, EVERY, EVERY + 1, 5 * EVERY + 77])
async def test_a_client_that_hangs_up_leaves_the_upload_at_its_last_checkpoint(
    checkpointed: Uploads, hang_up_at: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "moorage.uploads")
    upload = await checkpointed.start("repo")
    with pytest.raises(ClientDisconnected):
        await checkpointed.append(
            "repo", upload.id, hang_up_after(pieces(DATA, hang_up_at), hang_up_at), None, None
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
        "repo", upload.id, body_of(DATA[kept:]), ContentRange(kept, len(DATA) - 1), None
    )
    size = await checkpointed.finish("repo", upload.id, digest_of(DATA), empty(), None, None)
    assert size == len(DATA)


async def body_of(data: bytes) -> AsyncIterator[bytes]:
    for part in pieces(data, len(data)) if len(data) > 100 else [data]:
        yield part


async def test_a_single_post_whose_client_hangs_up_is_dropped(checkpointed: Uploads) -> None:
    with pytest.raises(ClientDisconnected):
        await checkpointed.monolithic(
            "repo", digest_of(DATA), hang_up_after(pieces(DATA, 3), 3 * EVERY + 5), len(DATA)
        )
    assert checkpointed.counters.client_aborts == 1
    assert await checkpointed.meta.expired_uploads(1e12) == []
    assert [key async for key in checkpointed.storage.list_keys("uploads/")] == []


async def test_a_dead_holders_lease_is_taken_over(checkpointed: Uploads) -> None:
    upload = await checkpointed.start("repo")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = str(process_identity.of_pid(dead.pid))
    dead.wait()
    await checkpointed.meta.acquire_upload(upload.id, "repo", 0, checkpointed.clock(), 300, holder)
    appended = await checkpointed.append("repo", upload.id, body_of(DATA), None, None)
    assert appended.offset == len(DATA)
    assert checkpointed.counters.leases_taken_over == 1


async def test_a_live_or_unknown_holders_lease_is_not_taken_over(checkpointed: Uploads) -> None:
    for holder in (str(process_identity.current()), "another-host/boot/ns/1/1", ""):
        upload = await checkpointed.start("repo")
        now = checkpointed.clock()
        await checkpointed.meta.acquire_upload(upload.id, "repo", 0, now, 300, holder)
        with pytest.raises(RegistryError) as info:
            await checkpointed.append("repo", upload.id, body_of(b"x"), None, None)
        assert info.value.status == 416 and "another request" in info.value.message
    assert checkpointed.counters.leases_taken_over == 0


async def test_a_writer_still_open_past_its_lease_is_never_written_beside(
    checkpointed: Uploads,
) -> None:
    """The lease says nobody writes, but a writer is still open (its request stalled past
    the lease): a new request is refused, and can go on once that writer is gone."""
    upload = await checkpointed.start("repo")
    stalled = await checkpointed.storage.open_writer(upload_key(upload.id), 0)
    with pytest.raises(RegistryError) as info:
        await checkpointed.append("repo", upload.id, body_of(DATA), None, None)
    assert info.value.status == 416 and "another request" in info.value.message
    current = await checkpointed.meta.get_upload(upload.id, "repo")
    assert current is not None and (current.offset, current.lease_until) == (0, 0.0)
    await stalled.abort()
    appended = await checkpointed.append("repo", upload.id, body_of(DATA), None, None)
    assert appended.offset == len(DATA)
