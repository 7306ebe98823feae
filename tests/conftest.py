"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared helpers' asserts explain their failures as the tests' own do.
pytest.register_assert_rewrite("tests.support")

from tests.support.postgres import PostgresServer, postgres_for_tests  # noqa: E402
from tests.support.seaweedfs import BUCKET, SeaweedFS, start_seaweedfs  # noqa: E402
from tests.support.server import RunningRegistry, start_moorage  # noqa: E402
from tests.support.topology import Topology, start_topology  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (or ``MOORAGE_TEST_POSTGRES_DSN``'s); tests create
    databases of their own in it."""
    server = postgres_for_tests(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS (S3, over HTTP and HTTPS) for the session; each test keeps to a key
    prefix of its own."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), buckets=(BUCKET,), tls=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moorage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One `moorage serve` (2 workers, plain HTTP) for tests that use distinct repositories."""
    registry = start_moorage(tmp_path_factory.mktemp("moorage-shared"))
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """The scale-out topology (SeaweedFS, PostgreSQL, three replicas behind HAProxy), once for
    the session: the scale-out client tests and the conformance suites share it, each in
    repositories of their own."""
    running = start_topology(tmp_path_factory.mktemp("scale-out"))
    yield running
    running.stop()


@pytest.fixture
def fresh_moorage(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A `moorage serve` of the test's own, for tests that need an empty registry."""
    registry = start_moorage(tmp_path / "registry")
    yield registry
    registry.stop()
