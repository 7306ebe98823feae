"""How nodes pull from the registry: containerd, given the files the chart's opt-in DaemonSet
writes, pulls an image named by the registry Service's DNS name through 127.0.0.1:<nodePort>.

The registry is a real ``moorage serve`` on a free port of the NodePort range, standing in for
the NodePort on a node. The DaemonSet's script (from the rendered ConfigMap, run with
``/bin/sh`` as the DaemonSet runs it, its directories pointed at the test's) writes the
hosts.toml files; a real containerd (``ctr --hosts-dir``) pulls
``moorage.<namespace>.svc:5000/team/app:1``, which no resolver knows; on TERM the script removes
what it wrote, as when the DaemonSet goes away.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.charts.chart import CHART, PROFILES, Helm, find
from tests.support.clients import Containerd, containerd
from tests.support.http import push_image
from tests.support.images import random_image
from tests.support.kube import ControlPlane
from tests.support.server import RunningRegistry, start_moorage
from tests.support.waiting import wait_until


def free_node_port() -> int:
    """A free port in Kubernetes' NodePort range (30000-32767)."""
    candidates = list(range(30000, 32768))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 30000-32767")


@pytest.fixture
def node_port_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    registry = start_moorage(tmp_path / "registry", workers=1, port=free_node_port())
    yield registry
    registry.stop()


@pytest.fixture
def ctrd(tmp_path: Path) -> Iterator[Containerd]:
    with containerd(tmp_path / "containerd") as daemon:
        yield daemon


def test_containerd_pulls_the_service_name_through_the_node_port(
    plane: ControlPlane,
    make_helm: Callable[..., Helm],
    node_port_registry: RunningRegistry,
    ctrd: Containerd,
    tmp_path: Path,
) -> None:
    image = push_image(node_port_registry.address, "team/app", random_image(), "1")
    helm, kube = make_helm(), plane.admin()
    rendered = helm.template(
        "moorage", CHART, "--namespace", "moorage",
        "--values", PROFILES["containerd-hosts"],
        "--set", f"registry.service.nodePort={node_port_registry.port}",
    )  # fmt: skip
    configmap = find(
        [m.dry_run(kube, "kube-system") for m in rendered if m.head.kind == "ConfigMap"],
        "ConfigMap",
        "moorage-containerd-hosts",
    )
    files = tmp_path / "config"
    files.mkdir()
    for key, text in configmap["data"].items():
        (files / key).write_text(text)
    certs_d = tmp_path / "certs.d"
    certs_d.mkdir()
    script = subprocess.Popen(
        ["/bin/sh", str(files / "write-hosts.sh")],
        env={"PATH": os.environ["PATH"], "CERTS_DIR": str(certs_d), "FILES_DIR": str(files)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    written = [certs_d / host / "hosts.toml" for host in (
        "moorage.moorage.svc:5000", "moorage.moorage.svc.cluster.local:5000"
    )]  # fmt: skip
    try:
        wait_until(lambda: all(path.is_file() for path in written), "the hosts.toml files")
        for name in ("moorage.moorage.svc:5000", "moorage.moorage.svc.cluster.local:5000"):
            reference = f"{name}/team/app:1"
            ctrd.ctr("images", "pull", "--hosts-dir", certs_d, reference)
            assert ctrd.image_target(reference)["digest"] == image.digest
    finally:
        script.send_signal(signal.SIGTERM)
        output, _ = script.communicate(timeout=10)
    assert script.returncode == 0, output
    assert [line for line in output.splitlines() if line.startswith("wrote")] == [
        f"wrote {path}" for path in written
    ]
    assert list(certs_d.iterdir()) == [], "the files stay after the DaemonSet's pod stopped"
