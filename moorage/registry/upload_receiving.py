"""Receiving an upload's bytes: one request body appended to the upload in storage.

The body streams into a storage writer opened at the upload's offset (which drops whatever a
dead request wrote past it), through the running hash. On the way the request keeps its lease
and makes checkpoints (``upload_checkpoints``); the body must hold exactly the bytes the
request declared, if it declared any.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from moorage.errors import ErrorCode, RegistryError
from moorage.hashing import Hasher, restore_hasher
from moorage.registry.layout import upload_key
from moorage.registry.upload_checkpoints import Checkpoint, Checkpoints
from moorage.registry.upload_sessions import HeldLease, busy
from moorage.storage.base import StorageDriver, Writer, WriterBusy

#: A request body, chunk by chunk as it arrives.
Body = AsyncIterator[bytes]


async def receive(
    storage: StorageDriver,
    lease: HeldLease,
    body: Body,
    expected: int | None,
    checkpoints: Checkpoints,
) -> tuple[int, Hasher | None]:
    """Append ``body`` to the upload ``lease`` holds, checkpointing on the way; returns the
    new offset and the running hash (None if the saved hash state could not be restored).
    ``expected``: how many bytes the body must hold (None: any number). On failure
    ``checkpoints.kept`` is the progress to keep."""
    upload = lease.upload
    hasher = restore_hasher("sha256", upload.hash_state)
    try:
        writer: Writer = await storage.open_writer(upload_key(upload.id), upload.offset)
    except WriterBusy:
        # The lease's holder died as far as the metadata can tell, yet its writer is still
        # open: a process stalled past its lease. Never write beside it.
        raise busy() from None
    position = upload.offset
    try:
        async for chunk in body:
            if lease.due:
                await lease.keep()
            checkpoints.check()
            if expected is not None and position - upload.offset + len(chunk) > expected:
                raise RegistryError(
                    ErrorCode.SIZE_INVALID, f"body is longer than the {expected} bytes declared"
                )
            while len(chunk) >= checkpoints.bytes_to_due(position):
                head = checkpoints.bytes_to_due(position)
                position = await _write(writer, hasher, chunk[:head], position)
                chunk = chunk[head:]
                state = hasher.state() if hasher is not None else None
                checkpoints.started(Checkpoint(position, state), await writer.checkpoint())
            if chunk:
                position = await _write(writer, hasher, chunk, position)
        await writer.close()
        await checkpoints.finish()
    except BaseException:
        await writer.abort()  # waits for the checkpoints under way to be durable (or fail)
        await checkpoints.settle()
        raise
    received = position - upload.offset
    if expected is not None and received != expected:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"received {received} bytes but {expected} were declared",
        )
    return position, hasher


async def _write(writer: Writer, hasher: Hasher | None, data: bytes, position: int) -> int:
    if hasher is not None:
        hasher.update(data)
    await writer.write(data)
    return position + len(data)
