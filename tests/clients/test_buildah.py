"""buildah builds an image from scratch and pushes it to moorage; skopeo checks the result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.clients import Clients, RegistryHttp
from tests.support.images import check_layout_image, layer_files, open_layout
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients


def test_build_from_scratch_and_push(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """``buildah from scratch`` + ``copy`` + ``commit`` + ``push``: the registry serves the
    manifest buildah reports, and the layer holds the copied files byte for byte."""
    context = tmp_path / "context"
    context.mkdir()
    payload = {"app/data.bin": os.urandom(700_000), "app/config.txt": os.urandom(2_000)}
    for name, data in payload.items():
        path = context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    container = clients.buildah("from", "scratch").stdout.strip()
    clients.buildah("copy", container, context / "app", "/app")
    clients.buildah(
        "config",
        "--label",
        f"moorage.test={repo}",
        "--cmd",
        "/app/run",
        "--arch",
        "amd64",
        "--os",
        "linux",
        container,
    )
    image_id = clients.buildah(
        "commit", "--quiet", "--format", "oci", container, "localhost/built:1"
    ).stdout.strip()

    digest_file = tmp_path / "pushed.digest"
    target = f"docker://{registry.address}/{repo}:built"
    clients.buildah(
        "push", "--tls-verify=false", "--digestfile", digest_file, "localhost/built:1", target
    )
    pushed = digest_file.read_text().strip()

    inspected = clients.skopeo_inspect(target, "--tls-verify=false")
    assert inspected["Digest"] == pushed
    labels = inspected["Labels"]
    assert isinstance(labels, dict) and labels["moorage.test"] == repo
    layers = inspected["Layers"]
    assert isinstance(layers, list) and len(layers) == 1
    config = json.loads(
        clients.skopeo("inspect", "--config", "--raw", "--tls-verify=false", target).stdout
    )
    assert config["config"]["Cmd"] == ["/app/run"]
    stored = http.check_image(repo, "built")
    assert stored.digest == pushed
    assert stored.json["config"]["digest"] == f"sha256:{image_id.removeprefix('sha256:')}"

    # The layer, pulled out again, holds exactly the files that were copied in.
    out = open_layout(tmp_path / "out")
    clients.skopeo("copy", "--src-tls-verify=false", target, out.ref("built"))
    manifest = check_layout_image(out, pushed)
    files = layer_files(out.read_blob(manifest["layers"][0]["digest"]))
    assert files == payload
