"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import RunningRegistry, start_moorage


@pytest.fixture(scope="session")
def moorage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One `moorage serve` (2 workers, plain HTTP) for tests that use distinct repositories."""
    registry = start_moorage(tmp_path_factory.mktemp("moorage-shared"))
    yield registry
    registry.stop()


@pytest.fixture
def fresh_moorage(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A `moorage serve` of the test's own, for tests that need an empty registry."""
    registry = start_moorage(tmp_path / "registry")
    yield registry
    registry.stop()
