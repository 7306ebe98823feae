"""Services over the memory driver and SQLite: ``registry``; upload services ``uploads``
with a short lease and ``checkpointed`` with checkpoints every ``EVERY`` bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.meta.sqlite import SQLiteMetadata
from moorage.registry.service import Registry
from moorage.registry.uploads import Uploads
from moorage.storage.memory import MemoryDriver
from tests.registry.upload_bodies import EVERY
from tests.support.app import make_env
from tests.support.collecting import make_gc_env

__all__ = ["make_env", "make_gc_env"]


@pytest.fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    yield Uploads(MemoryDriver(), meta, lease=0.3)
    await meta.close()


@pytest.fixture
async def checkpointed(tmp_path: Path) -> AsyncIterator[Uploads]:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    yield Uploads(MemoryDriver(), meta, lease=30, checkpoint_every=EVERY)
    await meta.close()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """A registry over the memory driver and SQLite."""
    made = Registry(MemoryDriver(), SQLiteMetadata(tmp_path / "registry.db"))
    yield made
    await made.close()
