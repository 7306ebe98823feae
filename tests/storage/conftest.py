from __future__ import annotations

from pathlib import Path

import pytest

from moorage.storage.base import StorageDriver
from moorage.storage.filesystem import FilesystemDriver
from moorage.storage.memory import MemoryDriver


@pytest.fixture(params=["memory", "filesystem"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    """Every storage driver; the same contract suite runs against each."""
    if request.param == "memory":
        return MemoryDriver()
    return FilesystemDriver(tmp_path / "root")
