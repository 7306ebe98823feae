"""Fixtures of the admission tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kube import StartingControlPlane, start_control_plane


@pytest.fixture(scope="package")
def kube_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartingControlPlane]:
    """One control plane (``../shared/tools/kube``) for the modules of this package that need
    a real kube-apiserver, stopped after the package's last test. It is returned while it
    starts (``wait()`` gives the ``ControlPlane``), so a module can prepare meanwhile. Each
    module keeps to namespaces and cluster-wide objects of its own names, and takes away
    what would change the others' requests (admission webhooks)."""
    starting = start_control_plane(tmp_path_factory.mktemp("kube") / "state")
    yield starting
    starting.stop()
