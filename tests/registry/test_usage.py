"""moorage.registry.usage: pulls and pushes counted in memory, flushed to the store in one
write, and the usage report."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from moorage.errors import ErrorCode, RegistryError
from moorage.meta.sqlite import SQLiteMetadata
from moorage.model import ManifestPulls, RepositoryUsage, UsageCount
from moorage.registry.usage import Usage
from tests.meta.helpers import ACTOR, manifest
from tests.support.clocks import ManualClock


class RecordingStore:
    """A ``UsageStore`` that keeps what each flush wrote; it can fail, or hold a write until
    told to go on."""

    def __init__(self) -> None:
        self.flushes: list[list[UsageCount]] = []
        self.failures = 0
        self.hold: asyncio.Event | None = None
        self.writing = asyncio.Event()

    async def record_usage(self, counts: Sequence[UsageCount]) -> None:
        self.writing.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("the store is down")
        self.flushes.append(list(counts))

    async def repository_usage(self, repository: str | None) -> list[RepositoryUsage]:
        return []

    async def manifest_pulls(self, repository: str) -> list[ManifestPulls]:
        return []


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def usage(store: RecordingStore, clock: ManualClock) -> Usage:
    return Usage(store, clock=clock)


A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


async def test_counts_stay_in_memory_until_a_flush_writes_them_at_once(
    usage: Usage, store: RecordingStore, clock: ManualClock
) -> None:
    assert not usage.pending
    usage.pulled("team/app", A)
    clock.advance(1)
    usage.pulled("team/app", A)
    usage.pulled("team/app", B)
    clock.advance(1)
    usage.pushed("team/app")
    usage.pulled("other", A)
    assert usage.pending
    assert store.flushes == []  # counting wrote nothing

    assert await usage.flush() == 2
    assert store.flushes == [
        [
            UsageCount(
                "other", pulls=1, last_pull=1002.0, manifests=(ManifestPulls(A, 1, 1002.0),)
            ),
            UsageCount(
                "team/app",
                pulls=3,
                pushes=1,
                last_pull=1001.0,
                last_push=1002.0,
                manifests=(ManifestPulls(A, 2, 1001.0), ManifestPulls(B, 1, 1001.0)),
            ),
        ]
    ]
    assert not usage.pending
    assert await usage.flush() == 0  # nothing new: no write
    assert len(store.flushes) == 1

    usage.pushed("team/app")
    assert await usage.flush() == 1
    assert store.flushes[1] == [UsageCount("team/app", pushes=1, last_push=1002.0)]


async def test_a_failed_flush_keeps_its_counts_for_the_next(
    usage: Usage, store: RecordingStore, clock: ManualClock
) -> None:
    usage.pulled("team/app", A)
    usage.pushed("team/app")
    store.failures = 1
    with pytest.raises(OSError):
        await usage.flush()
    assert usage.pending
    clock.advance(5)
    usage.pulled("team/app", A)  # counted while the store was down
    assert await usage.flush() == 1
    assert store.flushes == [
        [
            UsageCount(
                "team/app",
                pulls=2,
                pushes=1,
                last_pull=1005.0,
                last_push=1000.0,
                manifests=(ManifestPulls(A, 2, 1005.0),),
            )
        ]
    ]


async def test_cancelling_a_flush_neither_loses_nor_repeats_its_write(
    usage: Usage, store: RecordingStore
) -> None:
    usage.pulled("team/app", A)
    store.hold = asyncio.Event()
    flushing = asyncio.create_task(usage.flush())
    await store.writing.wait()
    flushing.cancel()  # as the app's cleanup cancels its flush loop
    with pytest.raises(asyncio.CancelledError):
        await flushing
    usage.pulled("team/app", B)  # counted meanwhile
    final = asyncio.create_task(usage.flush())  # the flush at shutdown waits for it
    await asyncio.sleep(0)
    store.hold.set()
    assert await final == 1
    assert [[m.digest for m in c.manifests] for flush in store.flushes for c in flush] == [
        [A],
        [B],
    ]


async def test_the_report_includes_this_workers_counts(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    try:
        image = manifest("v1")
        await meta.put_manifest("team/app", image, ["v1"], ACTOR)
        usage = Usage(meta, clock=ManualClock(2000.0))
        usage.pushed("team/app")
        usage.pulled("team/app", image.digest)
        usage.pulled("team/app", image.digest)
        # Not in the store yet...
        (stored,) = await meta.repository_usage("team/app")
        assert (stored.pulls, stored.pushes) == (0, 0)
        # ... but the report flushes this worker's counters first.
        (row,) = await usage.report("team/app")
        assert row == RepositoryUsage(
            "team/app", 1, 1, 0, image.size, 0, 0, 2, 1, last_pull=2000.0, last_push=2000.0
        )
        assert not usage.pending
        assert await meta.manifest_pulls("team/app") == [ManifestPulls(image.digest, 2, 2000.0)]
        assert [r.repository for r in await usage.report()] == ["team/app"]
        with pytest.raises(RegistryError) as info:
            await usage.report("team/none")
        assert info.value.code is ErrorCode.NAME_UNKNOWN
    finally:
        await meta.close()


def test_counting_is_a_dict_update(usage: Usage, store: RecordingStore) -> None:
    """No event loop needed, nothing awaited: the hot path only touches memory."""
    for _ in range(1000):
        usage.pulled("team/app", A)
    assert usage.pending
    assert store.flushes == []
