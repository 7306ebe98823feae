"""The PostgreSQL backend's plumbing, without a server: the connection pool and the lookup
coalescer (moorage.meta.postgres.pool, moorage.meta.coalesce)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from moorage.meta.coalesce import MAX_BATCH, Coalescer
from moorage.meta.errors import MetadataUnavailable
from moorage.meta.postgres.pool import Pool, PoolClosed
from tests.support.postgres import find_binaries
from tests.support.waiting import wait_until_async


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False
        self.in_transaction = False
        self.terminated = False

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    def terminate(self) -> None:
        self.closed = self.terminated = True

    async def close(self) -> None:
        self.closed = True


def fake_pool(max_size: int) -> tuple[Pool, list[FakeConnection]]:
    made: list[FakeConnection] = []

    async def connect() -> FakeConnection:
        await asyncio.sleep(0)
        made.append(FakeConnection())
        return made[-1]

    return Pool(connect, max_size), made


async def test_pool_reuses_connections_and_bounds_them() -> None:
    pool, made = fake_pool(2)
    in_use = 0
    most = 0

    async def work() -> None:
        nonlocal in_use, most
        async with pool.connection():
            in_use += 1
            most = max(most, in_use)
            await asyncio.sleep(0.001)
            in_use -= 1

    await asyncio.gather(*(work() for _ in range(20)))
    assert most == 2 and len(made) == 2 and pool.size == 2
    await pool.fill(2)
    assert len(made) == 2


async def test_pool_fill_opens_the_minimum() -> None:
    pool, made = fake_pool(5)
    await pool.fill(3)
    assert len(made) == 3 and pool.size == 3
    await pool.fill(10)
    assert len(made) == 5


async def test_pool_replaces_broken_and_interrupted_connections() -> None:
    pool, made = fake_pool(1)
    async with pool.connection() as conn:
        conn.closed = True  # the server went away meanwhile
    async with pool.connection() as conn:
        assert conn is made[1]
    with pytest.raises(asyncpg.UniqueViolationError):
        async with pool.connection() as conn:
            raise asyncpg.UniqueViolationError("duplicate")  # answered: kept
    async with pool.connection() as conn:
        assert conn is made[1]
    with pytest.raises(TimeoutError):
        async with pool.connection() as conn:
            raise TimeoutError  # interrupted mid-query: closed
    assert made[1].terminated
    async with pool.connection() as conn:
        assert conn is made[2]
        conn.in_transaction = True  # left in a transaction: closed
    assert made[2].terminated and pool.size == 0


async def test_pool_waiters_get_connections_in_order_and_may_give_up() -> None:
    pool, made = fake_pool(1)
    first = await pool.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        async with pool.connection():
            order.append(name)

    a = asyncio.ensure_future(wait("a"))
    b = asyncio.ensure_future(wait("b"))
    c = asyncio.ensure_future(wait("c"))
    await wait_until_async(lambda: pool.waiting == 3, "three requests waiting for the pool")
    b.cancel()
    pool.release(first)
    await asyncio.gather(a, c, b, return_exceptions=True)
    assert order == ["a", "c"] and len(made) == 1


async def test_pool_hands_a_free_slot_to_a_waiter_when_a_connection_is_dropped() -> None:
    pool, made = fake_pool(1)
    first = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await wait_until_async(lambda: pool.waiting == 1, "a request waiting for the pool")
    pool.release(first, discard=True)
    second = await asyncio.wait_for(waiter, 1)
    assert second is made[1] and first.terminated


async def test_a_closed_pool_refuses_and_wakes_its_waiters() -> None:
    pool, _ = fake_pool(1)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await wait_until_async(lambda: pool.waiting == 1, "a request waiting for the pool")
    await pool.close()
    with pytest.raises(PoolClosed):
        await waiter
    pool.release(held)
    assert held.terminated
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_coalescer_answers_one_iteration_with_one_fetch() -> None:
    calls: list[list[str]] = []

    async def fetch(keys: Sequence[str]) -> dict[str, int]:
        calls.append(list(keys))
        return {k: len(k) for k in keys if k != "missing"}

    coalescer: Coalescer[str, int] = Coalescer(fetch)
    results = await asyncio.gather(
        *(coalescer.get(k) for k in ["a", "bb", "a", "missing", "ccc", "bb"])
    )
    assert results == [1, 2, 1, None, 3, 2]
    assert calls == [["a", "bb", "missing", "ccc"]]
    assert await coalescer.get("dddd") == 4  # alone: a batch of one
    assert calls[-1] == ["dddd"]
    await asyncio.gather(*(coalescer.get(str(i)) for i in range(MAX_BATCH + 10)))
    assert [len(c) for c in calls[-2:]] == [MAX_BATCH, 10]


async def test_coalescer_failures_reach_every_waiter_and_cancellation_only_one() -> None:
    release = asyncio.Event()
    failing = True

    fetching: list[Sequence[str]] = []

    async def fetch(keys: Sequence[str]) -> dict[str, int]:
        fetching.append(keys)
        await release.wait()
        if failing:
            raise MetadataUnavailable("down")
        return {k: 1 for k in keys}

    coalescer: Coalescer[str, int] = Coalescer(fetch)
    waiters = [asyncio.ensure_future(coalescer.get(k)) for k in "abc"]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, MetadataUnavailable) for r in results)
    failing = False
    release.clear()
    waiters = [asyncio.ensure_future(coalescer.get(k)) for k in "ab"]
    await wait_until_async(lambda: len(fetching) == 2, "the second batch to be fetched")
    waiters[0].cancel()
    release.set()
    assert await waiters[1] == 1
    assert waiters[0].cancelled()
    await coalescer.wait_idle()


def test_missing_postgresql_fails_with_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL tests are never skipped: without a server they fail, saying what to do."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        find_binaries(tmp_path / "no-postgresql")
