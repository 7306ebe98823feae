"""skopeo (containers/image) against moorage: copy in and out, multi-arch, Docker v2s2,
delete and list-tags. Images are OCI layouts the tests write themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.clients import Clients, RegistryHttp, docker_ref, expect_failure
from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    check_layout_image,
    layout_blob_digests,
    multiarch_image,
    new_image,
    open_layout,
    random_image,
)
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients


def test_copy_in_inspect_and_copy_out(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """An OCI layout copied in keeps its manifest bytes (pretty-printed JSON, so any
    re-serialization would change the digest); copied out, every blob is byte-identical."""
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(300_000, 700_000, 50_000))
    digest_file = tmp_path / "pushed.digest"
    clients.skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--digestfile",
        digest_file,
        layout.ref("v1"),
        docker_ref(registry, repo, "v1"),
    )
    assert digest_file.read_text().strip() == image.digest

    inspected = clients.skopeo_inspect(docker_ref(registry, repo, "v1"), "--tls-verify=false")
    assert inspected["Digest"] == image.digest
    assert inspected["Layers"] == image.layer_digests
    assert inspected["Architecture"] == "amd64"
    assert inspected["Os"] == "linux"
    assert inspected["Labels"] == image.config_json["config"]["Labels"]
    raw = clients.skopeo(
        "inspect", "--raw", "--tls-verify=false", docker_ref(registry, repo, "v1")
    ).stdout
    assert raw.encode() == image.manifest
    config = clients.skopeo(
        "inspect", "--config", "--raw", "--tls-verify=false", docker_ref(registry, repo, "v1")
    ).stdout
    assert config.encode() == layout.read_blob(image.config_digest)

    stored = http.check_image(repo, "v1")
    assert stored.digest == image.digest
    assert stored.media_type == OCI_MANIFEST
    assert stored.payload == image.manifest

    out = open_layout(tmp_path / "out")
    clients.skopeo(
        "copy", "--src-tls-verify=false", docker_ref(registry, repo, "v1"), out.ref("copy")
    )
    assert out.tagged("copy")["digest"] == image.digest
    check_layout_image(out, image.digest)
    assert layout_blob_digests(out) == {image.digest, *image.blob_digests}
    for digest in image.blob_digests:
        assert out.read_blob(digest) == layout.read_blob(digest), digest

    # By digest too.
    by_digest = open_layout(tmp_path / "by-digest")
    clients.skopeo(
        "copy",
        "--src-tls-verify=false",
        docker_ref(registry, repo, image.digest),
        by_digest.ref("pinned"),
    )
    assert by_digest.tagged("pinned")["digest"] == image.digest
    check_layout_image(by_digest, image.digest)


def test_multiarch_copy_all_in(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """``copy --all`` of an image index stores the index and both platform images verbatim."""
    layout = open_layout(tmp_path / "src")
    multi = layout.add(multiarch_image(layer_sizes=(200_000, 100_000)), "multi")
    clients.skopeo(
        "copy",
        "--all",
        "--dest-tls-verify=false",
        layout.ref("multi"),
        docker_ref(registry, repo, "m"),
    )
    stored = http.manifest(repo, "m")
    assert stored.digest == multi.digest
    assert stored.media_type == OCI_INDEX
    assert stored.payload == multi.manifest
    platforms = {
        f"{d['platform']['os']}/{d['platform']['architecture']}": d["digest"]
        for d in stored.json["manifests"]
    }
    assert platforms == {
        "linux/amd64": multi.for_platform("linux/amd64").digest,
        "linux/arm64": multi.for_platform("linux/arm64").digest,
    }
    for image in multi.children:
        child = http.check_image(repo, image.digest)
        assert child.payload == image.manifest
        for digest in image.blob_digests:
            assert http.blob(repo, digest) == layout.read_blob(digest)


def test_multiarch_copy_all_out(
    clients: Clients, registry: RunningRegistry, repo: str, tmp_path: Path
) -> None:
    """``copy --all`` out of the registry keeps the index digest and both platforms."""
    layout = open_layout(tmp_path / "src")
    multi = layout.add(multiarch_image(layer_sizes=(200_000, 100_000)), "multi")
    clients.skopeo(
        "copy",
        "--all",
        "--dest-tls-verify=false",
        layout.ref("multi"),
        docker_ref(registry, repo, "m"),
    )
    raw = clients.skopeo("inspect", "--raw", "--tls-verify=false", docker_ref(registry, repo, "m"))
    assert raw.stdout.encode() == multi.manifest

    out = open_layout(tmp_path / "out")
    clients.skopeo(
        "copy", "--all", "--src-tls-verify=false", docker_ref(registry, repo, "m"), out.ref("m")
    )
    assert out.tagged("m")["digest"] == multi.digest
    assert out.read_blob(multi.digest) == multi.manifest
    for image in multi.children:
        check_layout_image(out, image.digest)
        for digest in image.blob_digests:
            assert out.read_blob(digest) == layout.read_blob(digest)

    # Selecting one platform from the index.
    arm = open_layout(tmp_path / "arm")
    clients.skopeo(
        "--override-arch",
        "arm64",
        "copy",
        "--src-tls-verify=false",
        docker_ref(registry, repo, "m"),
        arm.ref("arm"),
    )
    arm64 = multi.for_platform("linux/arm64")
    assert arm.tagged("arm")["digest"] == arm64.digest
    assert layout_blob_digests(arm) == {arm64.digest, *arm64.blob_digests}


def test_docker_v2s2_push(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """``--format v2s2`` stores a Docker schema 2 manifest (served with its media type) that
    references the same config and layer blobs."""
    layout, image = new_image(tmp_path / "src", "v1")
    digest_file = tmp_path / "pushed.digest"
    clients.skopeo(
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        "--digestfile",
        digest_file,
        layout.ref("v1"),
        docker_ref(registry, repo, "v2s2"),
    )
    stored = http.check_image(repo, "v2s2")
    assert stored.digest == digest_file.read_text().strip()
    assert stored.media_type == DOCKER_MANIFEST
    body = stored.json
    assert body["mediaType"] == DOCKER_MANIFEST
    assert body["config"]["mediaType"] == DOCKER_CONFIG
    assert {layer["mediaType"] for layer in body["layers"]} == {DOCKER_LAYER_GZIP}
    assert body == image.as_docker().json
    assert http.blob(repo, image.config_digest) == layout.read_blob(image.config_digest)

    # A client that asks only for OCI manifests must not be handed the Docker one.
    oci_only = http.request("GET", f"/v2/{repo}/manifests/v2s2", {"Accept": OCI_MANIFEST})
    assert oci_only.status == 404, oci_only


def test_docker_v2s2_pull(
    clients: Clients, registry: RunningRegistry, repo: str, tmp_path: Path
) -> None:
    """A Docker v2s2 image pushed by skopeo can be inspected and copied out again."""
    layout, image = new_image(tmp_path / "src", "v1")
    clients.skopeo(
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        layout.ref("v1"),
        docker_ref(registry, repo, "v2s2"),
    )
    inspected = clients.skopeo_inspect(docker_ref(registry, repo, "v2s2"), "--tls-verify=false")
    assert inspected["Layers"] == image.layer_digests
    out = tmp_path / "out"
    clients.skopeo(
        "copy", "--src-tls-verify=false", docker_ref(registry, repo, "v2s2"), f"dir:{out}"
    )
    for digest in image.layer_digests:
        assert (out / digest.removeprefix("sha256:")).read_bytes() == layout.read_blob(digest)


def test_list_tags_and_delete(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """list-tags shows every pushed tag; ``skopeo delete`` removes the manifest (by digest)
    and its tag, and leaves other tags and their images alone."""
    layout = open_layout(tmp_path / "src")
    first = layout.add(random_image(layer_sizes=(100_000,)), "first")
    second = layout.add(random_image(layer_sizes=(100_000,)), "second")
    pushed = {"1.0": first, "1.1": second, "latest": second}
    for tag, image in pushed.items():
        source = "first" if image is first else "second"
        clients.skopeo(
            "copy", "--dest-tls-verify=false", layout.ref(source), docker_ref(registry, repo, tag)
        )
    listed = json.loads(
        clients.skopeo(
            "list-tags", "--tls-verify=false", f"docker://{registry.address}/{repo}"
        ).stdout
    )
    assert listed["Repository"] == f"{registry.address}/{repo}"
    assert sorted(listed["Tags"]) == ["1.0", "1.1", "latest"]
    assert sorted(http.tags(repo)) == ["1.0", "1.1", "latest"]

    clients.skopeo("delete", "--tls-verify=false", docker_ref(registry, repo, "1.0"))
    assert http.manifest_status(repo, "1.0") == 404
    assert http.manifest_status(repo, first.digest) == 404
    listed = json.loads(
        clients.skopeo(
            "list-tags", "--tls-verify=false", f"docker://{registry.address}/{repo}"
        ).stdout
    )
    assert sorted(listed["Tags"]) == ["1.1", "latest"]
    assert http.check_image(repo, "latest").digest == second.digest
    result = clients.skopeo(
        "inspect", "--tls-verify=false", docker_ref(registry, repo, "1.0"), check=False
    )
    expect_failure(result, "manifest unknown")

    # Deleting by digest removes every tag that points to it.
    clients.skopeo("delete", "--tls-verify=false", docker_ref(registry, repo, second.digest))
    assert http.manifest_status(repo, "1.1") == 404
    assert http.manifest_status(repo, "latest") == 404
    assert http.tags(repo) == []
