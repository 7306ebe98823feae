from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from moorage.storage.base import StorageDriver
from moorage.storage.filesystem import FilesystemDriver
from moorage.storage.memory import MemoryDriver
from moorage.storage.s3 import S3Driver
from moorage.storage.s3_config import S3Config
from tests.support.seaweedfs import BUCKET, SeaweedFS

#: Makes another driver over the same stored objects (as another process would).
Reopen = Callable[[], StorageDriver]


def s3_config(server: SeaweedFS, **overrides: object) -> S3Config:
    """A config for a fresh prefix of the test bucket, with the smallest part S3 allows."""
    settings: dict[str, object] = {
        "endpoint": server.endpoint,
        "region": server.region,
        "bucket": BUCKET,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "path_style": True,
        "prefix": f"t-{uuid.uuid4().hex[:16]}",
        "part_size": 5 * 1024 * 1024,
        # Commits keep descriptors however small the blob, so the contract suite covers them.
        "compact_limit": -1,
        **overrides,
    }
    return S3Config(**settings)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "filesystem", "s3", "s3-https"])
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Reopen]:
    """For each driver, a factory of drivers over one store (memory: the same instance).
    S3 runs twice: over HTTP (segments read off the socket) and over HTTPS (obstore)."""
    if request.param == "memory":
        memory = MemoryDriver()
        yield lambda: memory
    elif request.param == "filesystem":
        yield lambda: FilesystemDriver(tmp_path / "root")
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        config = s3_config(server)
        if request.param == "s3-https":
            assert server.https_endpoint is not None
            config = replace(config, endpoint=server.https_endpoint, ca_file=server.ca_file)
        made: list[S3Driver] = []

        def make() -> S3Driver:
            made.append(S3Driver(config))
            return made[-1]

        yield make
        for driver in made:
            await driver.close()


@pytest.fixture
def driver(reopen: Reopen) -> StorageDriver:
    """Every storage driver; the same contract suite runs against each."""
    return reopen()
