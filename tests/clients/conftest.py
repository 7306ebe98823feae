"""Fixtures for the real-client tests: isolated client state, repository names, HTTP checks.

Most tests share the session registry (``moorage_server``) and use a repository of their own.
Missing client binaries fail the tests with a hint to run scripts/install-clients.sh.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import Clients, Containerd, RegistryHttp, containerd
from tests.support.server import RunningRegistry

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.clients)


@pytest.fixture
def make_clients(tmp_path: Path) -> Iterator[Callable[[str], Clients]]:
    """Make more isolated client states (e.g. an empty storage to pull into), by name."""
    made: list[Clients] = []

    def make(name: str) -> Clients:
        made.append(Clients(tmp_path / name))
        return made[-1]

    yield make
    for clients in made:
        clients.close()


@pytest.fixture
def clients(make_clients: Callable[[str], Clients]) -> Clients:
    """Client state (auth, storage, configuration, caches) under this test's tmp dir."""
    return make_clients("clients")


@pytest.fixture
def registry(moorage_server: RunningRegistry) -> RunningRegistry:
    return moorage_server


@pytest.fixture
def http(moorage_server: RunningRegistry) -> RegistryHttp:
    return RegistryHttp(moorage_server.url)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of this test's own, e.g. ``clients/test-skopeo-copy-1a2b3c``."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"clients/{name}-{os.urandom(3).hex()}"


@pytest.fixture
def ctrd(tmp_path: Path) -> Iterator[Containerd]:
    """A containerd of the test's own (native snapshotter), stopped afterwards."""
    with containerd(tmp_path / "containerd") as daemon:
        yield daemon
