"""helm pushes a chart to moorage as an OCI artifact and pulls the same .tgz back.

helm comes from .tools/bin/helm (scripts/install-clients.sh) or PATH; its cache, config,
data and registry config live under the test's tmp dir.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from tests.support.clients import Clients, RegistryHttp
from tests.support.images import OCI_MANIFEST
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def write_chart(directory: Path, name: str, version: str) -> Path:
    """A small chart of the test's own, with a random value so every package is unique."""
    chart = directory / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: '1.0'\n"
        "description: moorage client test chart\ntype: application\n"
    )
    (chart / "values.yaml").write_text(f"token: {os.urandom(16).hex()}\nreplicas: 1\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  token: {{ .Values.token | quote }}\n"
    )
    return chart


def test_push_and_pull_chart(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    chart = write_chart(work, "moorage-demo", "0.1.0")
    clients.helm("lint", chart)
    clients.helm("package", chart, "--destination", work)
    package = work / "moorage-demo-0.1.0.tgz"
    assert package.is_file()

    pushed = clients.helm("push", package, f"oci://{registry.address}/{repo}", "--plain-http")
    output = pushed.stdout + pushed.stderr
    match = re.search(r"Digest:\s*(sha256:[0-9a-f]{64})", output)
    assert match, output
    digest = match.group(1)

    # Stored as a helm OCI artifact: the chart layer is the .tgz, byte for byte.
    stored = http.manifest(f"{repo}/moorage-demo", "0.1.0")
    assert stored.digest == digest
    assert stored.media_type == OCI_MANIFEST
    body = stored.json
    assert body["config"]["mediaType"] == HELM_CONFIG
    assert [layer["mediaType"] for layer in body["layers"]] == [HELM_CHART]
    chart_digest = "sha256:" + hashlib.sha256(package.read_bytes()).hexdigest()
    assert body["layers"][0]["digest"] == chart_digest
    assert http.blob(f"{repo}/moorage-demo", chart_digest) == package.read_bytes()
    assert http.tags(f"{repo}/moorage-demo") == ["0.1.0"]

    out = tmp_path / "pulled"
    out.mkdir()
    pulled = clients.helm(
        "pull",
        f"oci://{registry.address}/{repo}/moorage-demo",
        "--version",
        "0.1.0",
        "--plain-http",
        "--destination",
        out,
    )
    assert digest in pulled.stdout + pulled.stderr
    assert (out / "moorage-demo-0.1.0.tgz").read_bytes() == package.read_bytes()

    shown = clients.helm(
        "show",
        "values",
        f"oci://{registry.address}/{repo}/moorage-demo",
        "--version",
        "0.1.0",
        "--plain-http",
    )
    assert shown.stdout.strip() == (chart / "values.yaml").read_text().strip()
