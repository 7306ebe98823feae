"""The real-client tests again, against the scale-out topology's front door: three replicas
on SeaweedFS (S3) and PostgreSQL behind round-robin HAProxy, so one client's requests spread
over all of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clients import RegistryHttp
from tests.support.server import RunningRegistry
from tests.support.topology import Topology, start_topology


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    running = start_topology(tmp_path_factory.mktemp("scale-out"))
    yield running
    running.stop()


@pytest.fixture
def registry(topology: Topology) -> RunningRegistry:
    return topology.registry


@pytest.fixture
def http(topology: Topology) -> RegistryHttp:
    return RegistryHttp(topology.registry.url)
