from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from moorage.meta.base import MetadataStore
from moorage.meta.sqlite import SQLiteMetadata

#: Opens a second, independent handle on the same metadata (like another worker process).
Opener = Callable[[], MetadataStore]


@pytest.fixture(params=["sqlite"])
def open_meta(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A factory for handles on one fresh metadata store, for every backend."""
    path = tmp_path / "meta.db"

    def opener() -> MetadataStore:
        return SQLiteMetadata(path)

    return opener


@pytest.fixture
async def meta(open_meta: Opener) -> AsyncIterator[MetadataStore]:
    store = open_meta()
    yield store
    await store.close()
