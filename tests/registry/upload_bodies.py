"""Request bodies for the upload service's tests: as they arrive, slowly, or cut short by a
client that hangs up."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

from moorage.digest import Digest
from moorage.errors import ClientDisconnected

KIB = 1024
#: The checkpoint interval of the ``checkpointed`` upload service.
EVERY = 64 * KIB
DATA = bytes(random.Random(7).randbytes(1_000_000))


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def pieces(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random places, as request bodies arrive."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def body_of(data: bytes) -> AsyncIterator[bytes]:
    for part in pieces(data, len(data)) if len(data) > 100 else [data]:
        yield part


async def slow_body(parts: list[bytes], pause: float) -> AsyncIterator[bytes]:
    """``parts`` with ``pause`` seconds before each, as a slow client sends them: real time,
    since a held lease is renewed as the monotonic clock goes, not the service's ``clock``."""
    for part in parts:
        await asyncio.sleep(pause)
        yield part


async def empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


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
