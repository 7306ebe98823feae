"""The real-client tests again, against the scale-out topology's front door: three replicas
on SeaweedFS (S3) and PostgreSQL behind round-robin HAProxy, so one client's requests spread
over all of them. The topology is the session's (``topology`` in ``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from tests.support.clients import RegistryHttp
from tests.support.server import RunningRegistry
from tests.support.topology import Topology


@pytest.fixture
def registry(topology: Topology) -> RunningRegistry:
    return topology.registry


@pytest.fixture
def http(topology: Topology) -> RegistryHttp:
    return RegistryHttp(topology.registry.url)
