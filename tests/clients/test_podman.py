"""podman push and pull against moorage, with vfs storage under the test's tmp dir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.clients import Clients, RegistryHttp
from tests.support.images import OCI_MANIFEST, new_image
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients


def image_info(clients: Clients, reference: str) -> dict[str, object]:
    inspected = json.loads(clients.podman("image", "inspect", reference).stdout)
    assert len(inspected) == 1
    info: dict[str, object] = inspected[0]
    return info


def test_push_and_pull(
    clients: Clients,
    make_clients: Callable[[str], Clients],
    registry: RunningRegistry,
    http: RegistryHttp,
    repo: str,
    tmp_path: Path,
) -> None:
    """An image loaded from an OCI layout, pushed by podman and pulled back into empty
    storage has the same image id (config digest), layers and manifest digest."""
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(400_000, 600_000))
    image_id = clients.podman("pull", "--quiet", layout.ref("v1")).stdout.strip()
    assert f"sha256:{image_id}" == image.config_digest

    target = f"{registry.address}/{repo}:v1"
    digest_file = tmp_path / "pushed.digest"
    clients.podman(
        "push", "--tls-verify=false", "--digestfile", digest_file, image_id, f"docker://{target}"
    )
    pushed = digest_file.read_text().strip()

    stored = http.check_image(repo, "v1")
    assert stored.digest == pushed
    assert stored.media_type == OCI_MANIFEST
    body = stored.json
    assert body["config"]["digest"] == image.config_digest
    assert http.blob(repo, image.config_digest) == layout.read_blob(image.config_digest)
    assert len(body["layers"]) == len(image.layers)

    # Pull into fresh storage: same image, same manifest digest.
    fresh = make_clients("fresh")
    pulled_id = fresh.podman("pull", "--tls-verify=false", "--quiet", target).stdout.strip()
    assert pulled_id == image_id
    info = image_info(fresh, target)
    assert info["Id"] == image_id
    assert info["Digest"] == pushed
    assert f"{registry.address}/{repo}@{pushed}" in info["RepoDigests"]  # type: ignore[operator]
    rootfs = info["RootFS"]
    assert isinstance(rootfs, dict)
    assert rootfs["Layers"] == [layer.diff_id for layer in image.layers]
    assert info["Labels"] == image.config_json["config"]["Labels"]

    # And by digest.
    by_digest = fresh.podman(
        "pull", "--tls-verify=false", "--quiet", f"{registry.address}/{repo}@{pushed}"
    )
    assert by_digest.stdout.strip() == image_id


def test_push_under_two_tags_and_pull_each(
    clients: Clients,
    make_clients: Callable[[str], Clients],
    registry: RunningRegistry,
    http: RegistryHttp,
    repo: str,
    tmp_path: Path,
) -> None:
    """Two images pushed to one repository under their own tags come back as themselves."""
    first_layout, first = new_image(tmp_path / "a", "a", layer_sizes=(200_000,))
    second_layout, second = new_image(tmp_path / "b", "b", layer_sizes=(200_000,))
    for layout, tag in ((first_layout, "a"), (second_layout, "b")):
        image_id = clients.podman("pull", "--quiet", layout.ref(tag)).stdout.strip()
        clients.podman(
            "push", "--tls-verify=false", image_id, f"docker://{registry.address}/{repo}:{tag}"
        )
    assert sorted(http.tags(repo)) == ["a", "b"]
    fresh = make_clients("fresh")
    for tag, image in (("a", first), ("b", second)):
        pulled = fresh.podman(
            "pull", "--tls-verify=false", "--quiet", f"{registry.address}/{repo}:{tag}"
        )
        assert f"sha256:{pulled.stdout.strip()}" == image.config_digest
        assert http.manifest(repo, tag).json["config"]["digest"] == image.config_digest
