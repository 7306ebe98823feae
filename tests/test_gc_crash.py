"""Garbage collection killed at each of its steps, then run again: nothing kept is lost, and
the second run finishes the job.

The collector runs in a process of its own (the library, as ``moorage gc`` runs it), which
SIGKILLs itself when it reaches the step; the registry's data is then collected again in
this process and checked: every tagged image served whole, every blob the store records
still stored, and the garbage gone, bytes included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from moorage.api.app import create_app
from moorage.config import Settings, load_settings
from moorage.digest import Digest
from moorage.meta.postgres.schema import migrate
from moorage.registry.collector import STEPS
from moorage.registry.layout import blob_key
from moorage.registry.service import Registry
from moorage.server import build_registry
from tests.support.app import Client, assert_image_intact, push_image, push_seeded
from tests.support.images import Image, seeded_image
from tests.support.postgres import PostgresServer
from tests.support.seaweedfs import SeaweedFS
from tests.support.topology import replica_environment

_COLLECT = """
import asyncio, os, signal, sys
from moorage.config import load_settings
from moorage.server import build_registry

step, nth = sys.argv[1], int(sys.argv[2])
seen = 0

async def pause(name):
    global seen
    if name == step:
        seen += 1
        if seen == nth:
            os.kill(os.getpid(), signal.SIGKILL)

async def main():
    registry = build_registry(load_settings())
    try:
        await registry.collector(pause=pause).run()
    finally:
        await registry.close()

asyncio.run(main())
"""

#: Every step, the second time for repositories (between two of them).
KILL_POINTS = [(step, 2 if step == "repository" else 1) for step in STEPS]

Open = Callable[[], Awaitable[tuple[Registry, Client]]]


def collect_in_a_process(env: dict[str, str], step: str, nth: int) -> None:
    process = subprocess.run(
        [sys.executable, "-c", _COLLECT, step, str(nth)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == -signal.SIGKILL, (
        f"the collector was to die at {step} #{nth}: exit {process.returncode}\n"
        f"{process.stdout}\n{process.stderr}"
    )


@pytest.fixture
async def opener(aiohttp_client: AiohttpClient) -> AsyncIterator[Callable[[dict[str, str]], Open]]:
    def for_env(env: dict[str, str]) -> Open:
        async def open_registry() -> tuple[Registry, Client]:
            settings: Settings = load_settings(None, env)
            registry = build_registry(settings)  # closed with the app
            return registry, await aiohttp_client(create_app(registry, settings))

        return open_registry

    yield for_env


def filesystem_env(tmp_path: Path) -> dict[str, str]:
    return {"MOORAGE_DATA": str(tmp_path / "data")}


async def stored(registry: Registry, digest: str) -> bool:
    return await registry.storage.stat(blob_key(Digest.parse(digest))) is not None


async def crash_and_finish(env: dict[str, str], open_registry: Open, step: str, nth: int) -> None:
    env = {**env, "MOORAGE_GC_GRACE": "0", "MOORAGE_GC_UNTAGGED_AFTER": "0"}
    registry, client = await open_registry()
    kept = [await push_seeded(client, f"team/r{i}", "v1", f"kept-{i}") for i in range(3)]
    garbage: list[Image] = []
    for round_ in range(2):  # the first round's records become deletions before the crash
        for i in range(3):
            image = await push_image(client, f"team/r{i}", seeded_image(f"gone-{round_}-{i}"))
            garbage.append(image)
        if round_ == 0:
            await registry.collector().run()

    collect_in_a_process(env, step, nth)

    registry, client = await open_registry()
    await registry.collector().run()
    await registry.collector().run()  # deletes the bytes the first retired
    for i, image in enumerate(kept):
        await assert_image_intact(client, f"team/r{i}", image, ["v1"])
    for image in garbage:
        for blob in image.all_blobs:
            assert await registry.meta.find_blob(blob.digest) is None, (step, blob.digest)
            assert not await stored(registry, blob.digest), (step, blob.digest)
    assert await registry.meta.blob_deletions() == []


@pytest.mark.parametrize(("step", "nth"), KILL_POINTS)
async def test_filesystem_and_sqlite(
    tmp_path: Path, opener: Callable[[dict[str, str]], Open], step: str, nth: int
) -> None:
    env = {**filesystem_env(tmp_path), "MOORAGE_GC_GRACE": "0", "MOORAGE_GC_UNTAGGED_AFTER": "0"}
    await crash_and_finish(env, opener(env), step, nth)


@pytest.mark.parametrize(("step", "nth"), [("retire", 1), ("mark", 1), ("delete", 1)])
async def test_s3_and_postgres(
    tmp_path: Path,
    opener: Callable[[dict[str, str]], Open],
    seaweedfs: SeaweedFS,
    postgres_server: PostgresServer,
    step: str,
    nth: int,
) -> None:
    dsn = postgres_server.create_database(f"moorage_gc_crash_{os.getpid()}_{step}")
    await migrate(dsn)
    env = {
        **replica_environment(seaweedfs, dsn),
        **filesystem_env(tmp_path),
        "MOORAGE_STORAGE_S3_PREFIX": f"gc-crash-{os.getpid()}-{step}",
        "MOORAGE_GC_GRACE": "0",
        "MOORAGE_GC_UNTAGGED_AFTER": "0",
    }
    await crash_and_finish(env, opener(env), step, nth)
