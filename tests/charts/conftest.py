"""Fixtures of the chart tests: one control plane for the package, helm, the chart's hooks.

Every test here runs helm (a real client, like those of ``tests/clients``), so every test is
marked ``clients``. The control plane (``../shared/tools/kube``) is shared by the package's
modules; each test keeps to namespaces and release names of its own, and uninstalls what it
installs, since a release's webhooks, failing closed, would refuse the next test's Pods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.charts.chart import Helm, write_kubeconfig
from tests.support.clients import Clients
from tests.support.kube import ControlPlane, Kube, StartingControlPlane, start_control_plane

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.clients)


@pytest.fixture(scope="package")
def starting_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartingControlPlane]:
    starting = start_control_plane(tmp_path_factory.mktemp("kube") / "state")
    yield starting
    starting.stop()


@pytest.fixture(scope="package")
def plane(starting_plane: StartingControlPlane) -> ControlPlane:
    return starting_plane.wait()


@pytest.fixture
def kube(plane: ControlPlane) -> Kube:
    return plane.admin()


@pytest.fixture
def make_helm(tmp_path: Path) -> Iterator[Callable[..., Helm]]:
    """helm with state of its own (``make_helm(plane)`` adds a kubeconfig for its admin)."""
    made: list[Clients] = []

    def make(plane: ControlPlane | None = None) -> Helm:
        clients = Clients(tmp_path / f"helm-{len(made)}")
        made.append(clients)
        kubeconfig = None
        if plane is not None:
            kubeconfig = write_kubeconfig(clients.scratch / "kubeconfig", plane)
        return Helm(clients, kubeconfig)

    yield make
    for clients in made:
        clients.close()


@pytest.fixture
def helm(make_helm: Callable[..., Helm]) -> Helm:
    """helm without a cluster (lint, template, package, push)."""
    return make_helm()
