"""The real registry app behind an in-process aiohttp test client.

``env`` runs each core test over every storage driver: filesystem, memory and S3 (SeaweedFS);
``fs_env`` is the filesystem only (for checks on the files themselves); ``make_env`` builds a
registry with other settings (auth, TTLs, limits).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web_fileresponse
from pytest_aiohttp import AiohttpClient

from moorage.api.app import create_app
from moorage.config import Settings
from moorage.registry.service import Registry
from moorage.server import build_registry
from tests.support.seaweedfs import BUCKET, SeaweedFS

pytest.register_assert_rewrite("tests.api.helpers")

from tests.api.helpers import Client, Image, push_image  # noqa: E402

DRIVERS = ["filesystem", "memory", "s3"]


@dataclass
class RegistryEnv:
    client: Client
    registry: Registry
    settings: Settings
    #: The test's own directory; the data directory is nested inside it so that anything
    #: escaping the data directory still lands somewhere the test can see.
    root: Path

    @property
    def data(self) -> Path:
        return self.settings.data

    @property
    def driver(self) -> str:
        return self.settings.storage_driver


MakeEnv = Callable[..., Awaitable[RegistryEnv]]


def s3_settings(server: SeaweedFS) -> dict[str, Any]:
    """Settings for the session's SeaweedFS, under a key prefix of this registry's own."""
    return {
        "storage_s3_endpoint": server.endpoint,
        "storage_s3_region": server.region,
        "storage_s3_bucket": BUCKET,
        "storage_s3_access_key": server.access_key,
        "storage_s3_secret_key": server.secret_key,
        "storage_s3_prefix": f"api-{uuid.uuid4().hex[:16]}",
    }


@pytest.fixture
async def make_env(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeEnv]:
    # The memory driver keeps its SQLite file in a fresh temporary directory: keep it in
    # the test's own directory rather than the system's.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    counter = 0

    async def make(storage_driver: str = "filesystem", **overrides: Any) -> RegistryEnv:
        nonlocal counter
        counter += 1
        root = tmp_path / f"env{counter}"
        data = root / "srv" / "registry" / "data"
        data.mkdir(parents=True)
        if storage_driver == "s3":
            overrides = {**s3_settings(request.getfixturevalue("seaweedfs")), **overrides}
        settings = Settings(data=data, workers=1, storage_driver=storage_driver, **overrides)
        registry = build_registry(settings)
        client = await aiohttp_client(create_app(registry, settings))
        return RegistryEnv(client, registry, settings, root)

    yield make
    # aiohttp's FileResponse closes the served file in an executor without waiting; let those
    # closes finish before the loop goes away, or the files are reported as leaked.
    pending = list(getattr(web_fileresponse, "_CLOSE_FUTURES", ()))
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


@pytest.fixture(params=DRIVERS)
async def env(request: pytest.FixtureRequest, make_env: MakeEnv) -> RegistryEnv:
    """A fresh registry, once per storage driver."""
    return await make_env(request.param)


@pytest.fixture
async def fs_env(make_env: MakeEnv) -> RegistryEnv:
    return await make_env("filesystem")


@pytest.fixture
def client(env: RegistryEnv) -> Client:
    return env.client


@pytest.fixture
async def image(env: RegistryEnv) -> Image:
    """A known image (config, two layers, OCI manifest, tag) already in ``env``."""
    return await push_image(env.client, "stable/app", "v1", "known")
