"""The checkpoints one request makes while it streams into an upload.

Every ``every`` bytes of the upload (at offsets that are multiples of ``every``), the request
saves the hash state of exactly the bytes before that offset and asks the storage writer to
make them durable (``Writer.checkpoint``), then goes on streaming at once. In the background,
each checkpoint is recorded in the metadata store as soon as the writer reports it durable,
one after the other, in order; that offset is where the upload resumes if the request never
finishes. A request that fails keeps the newest checkpoint recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: An offset no upload reaches (checkpoints switched off).
_NEVER = 1 << 62


@dataclass(frozen=True, slots=True)
class Checkpoint:
    #: Bytes of the upload before the checkpoint.
    offset: int
    #: The saved hash state of exactly those bytes (None: the hash cannot be resumed).
    state: bytes | None


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve an outcome nobody may wait for (a checkpoint after one that failed)."""
    if not future.cancelled():
        future.exception()


class Checkpoints:
    def __init__(
        self, every: int, start: Checkpoint, record: Callable[[Checkpoint], Awaitable[None]]
    ) -> None:
        self.every = every
        #: The upload offset at which the next checkpoint is due.
        self.due = (start.offset // every + 1) * every if every > 0 else _NEVER
        #: The newest checkpoint recorded (first, where the request started).
        self.kept = start
        self._record = record
        #: Recording the newest checkpoint started, after the ones before it.
        self._chain: asyncio.Future[None] | None = None

    def bytes_to_due(self, position: int) -> int:
        """How many bytes may still be written from ``position`` before a checkpoint."""
        return self.due - position

    def started(self, checkpoint: Checkpoint, durable: Awaitable[None]) -> None:
        """The writer has begun making ``checkpoint.offset`` bytes durable: record them once
        it has, after the checkpoints before."""
        made_durable = asyncio.ensure_future(durable)
        made_durable.add_done_callback(_consume)
        self._chain = asyncio.ensure_future(self._keep(self._chain, checkpoint, made_durable))
        self.due += self.every

    async def _keep(
        self,
        previous: asyncio.Future[None] | None,
        checkpoint: Checkpoint,
        durable: asyncio.Future[None],
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)  # a failure stops the chain here
        await durable
        await self._record(checkpoint)
        self.kept = checkpoint

    def check(self) -> None:
        """Raise the error of a checkpoint that failed (to be made durable, or recorded)."""
        chain = self._chain
        if chain is not None and chain.done() and not chain.cancelled():
            error = chain.exception()
            if error is not None:
                raise error

    async def finish(self) -> None:
        """Wait until every checkpoint started is recorded; raise the first failure."""
        if self._chain is not None:
            await asyncio.shield(self._chain)

    async def settle(self) -> Checkpoint:
        """After a failure (the writer aborted, which waits for its checkpoints to be
        durable or fail): let the recording end, and return the newest checkpoint kept."""
        if self._chain is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._chain)
        return self.kept
