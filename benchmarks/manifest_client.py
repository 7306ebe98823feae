"""The tag policy benchmark's HTTP client, on asyncio and aiohttp over keep-alive connections:
``put_all`` PUTs manifests by tag ``concurrency`` at a time and times each one (``Outcome``),
``tag_digests`` asks where tags point (``HEAD``), ``get_json`` fetches a JSON resource, and
``bounded`` is the concurrency limit all of them share."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from policy_workload import Push, TagKey
from registry_http import OCI_MANIFEST

T = TypeVar("T")


@dataclass
class Outcome:
    """The answer to one ``Push``, and when it was sent and answered (``perf_counter``)."""

    push: Push
    start: float
    end: float
    status: int
    digest: str | None
    body: bytes


async def bounded(items: Sequence[T], concurrency: int, fn: Callable[[T], Awaitable[Any]]) -> None:
    """``fn`` on every item, ``concurrency`` at a time, items taken in order."""
    indices = iter(range(len(items)))

    async def worker() -> None:
        for index in indices:  # one shared iterator: each index goes to exactly one worker
            await fn(items[index])

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def put_all(
    session: aiohttp.ClientSession, pushes: Sequence[Push], concurrency: int
) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def put(push: Push) -> None:
        start = time.perf_counter()
        async with session.put(
            f"/v2/{push.repository}/manifests/{push.tag}",
            data=push.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        ) as response:
            body = await response.read()
        end = time.perf_counter()
        digest = response.headers.get("Docker-Content-Digest")
        outcomes.append(Outcome(push, start, end, response.status, digest, body))

    await bounded(pushes, concurrency, put)
    return outcomes


async def get_json(session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    """GET a JSON resource: (status, decoded body or None)."""
    async with session.get(path) as response:
        raw = await response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


async def tag_digests(
    session: aiohttp.ClientSession, keys: Sequence[TagKey], concurrency: int
) -> dict[TagKey, str | None]:
    """Where each tag points, by ``HEAD /v2/<name>/manifests/<tag>``."""
    found: dict[TagKey, str | None] = {}

    async def head(key: TagKey) -> None:
        async with session.head(
            f"/v2/{key[0]}/manifests/{key[1]}", headers={"Accept": OCI_MANIFEST}
        ) as response:
            ok = response.status == 200
            found[key] = response.headers.get("Docker-Content-Digest") if ok else None

    await bounded(keys, concurrency, head)
    return found
