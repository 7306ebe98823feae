"""Coalescing concurrent lookups into one query, as group commit does for writes.

Lookups made while a task runs, and by every task that runs in the same event-loop
iteration, are answered by one call of ``fetch(keys)``, which starts right after that
iteration. Equal keys are looked up once. Under load, a GET by tag then costs its worker a
fraction of a database round trip; alone, it waits for nothing but the end of the current
iteration.

Every lookup is answered by a query that starts after the lookup was asked, so it sees every
change committed before it was asked: read-after-write holds across replicas, as with one
query per lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Most keys in one query; more go in the next.
MAX_BATCH = 256


class Coalescer(Generic[K, V]):
    def __init__(self, fetch: Callable[[Sequence[K]], Awaitable[dict[K, V]]]) -> None:
        """``fetch`` returns the value of each key it found; a missing key means None."""
        self._fetch = fetch
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        keys = list(pending)
        for start in range(0, len(keys), MAX_BATCH):
            batch = {key: pending[key] for key in keys[start : start + MAX_BATCH]}
            task = asyncio.ensure_future(self._answer(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch(list(batch))
        except asyncio.CancelledError:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in batch.items():
            value = found.get(key)
            for future in futures:
                if not future.done():
                    future.set_result(value)

    async def wait_idle(self) -> None:
        """Wait for the queries under way (before closing what they use)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
