"""containerd (``ctr images pull --plain-http``) pulls what skopeo pushed to moorage.

containerd sends its acceptable manifest types in one comma-separated Accept header, and
verifies every blob's digest as it ingests it; the tests also compare its content store
files with the layout's blobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clients import Clients, Containerd
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    OciLayout,
    multiarch_image,
    new_image,
    open_layout,
)
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients


def assert_content_matches(daemon: Containerd, layout: OciLayout, digests: list[str]) -> None:
    for digest in digests:
        stored = daemon.content_path(digest)
        assert stored.is_file(), f"{digest} is not in containerd's content store"
        assert stored.read_bytes() == layout.read_blob(digest), digest


def test_pull_image(
    clients: Clients, registry: RunningRegistry, ctrd: Containerd, repo: str, tmp_path: Path
) -> None:
    """A pulled (and unpacked) image has the pushed manifest digest and identical blobs."""
    layout, image = new_image(tmp_path / "src", "v1")
    reference = f"{registry.address}/{repo}:v1"
    clients.skopeo("copy", "--dest-tls-verify=false", layout.ref("v1"), f"docker://{reference}")

    ctrd.ctr("images", "pull", "--plain-http", "--snapshotter", "native", reference)
    target = ctrd.image_target(reference)
    assert target == {"mediaType": OCI_MANIFEST, "digest": image.digest}
    assert_content_matches(ctrd, layout, [image.digest, *image.blob_digests])
    check = ctrd.ctr("images", "check", f"name=={reference}").stdout
    assert "complete" in check, check
    # Unpacked into the native snapshotter: one committed snapshot per layer.
    snapshots = ctrd.ctr("snapshots", "--snapshotter", "native", "ls").stdout
    assert len(snapshots.strip().splitlines()) - 1 == len(image.layers), snapshots

    # By digest, in another namespace (its own view of the content store).
    pinned = f"{registry.address}/{repo}@{image.digest}"
    ctrd.ctr("--namespace", "by-digest", "images", "pull", "--plain-http", pinned)
    listed = ctrd.ctr("--namespace", "by-digest", "images", "ls", "--quiet").stdout.split()
    assert listed == [pinned]


def test_pull_multiarch(
    clients: Clients, registry: RunningRegistry, ctrd: Containerd, repo: str, tmp_path: Path
) -> None:
    """``--all-platforms`` fetches the index and both images; ``--platform`` fetches the index
    and only the chosen platform's blobs."""
    layout = open_layout(tmp_path / "src")
    multi = layout.add(multiarch_image(layer_sizes=(150_000, 150_000)), "multi")
    reference = f"{registry.address}/{repo}:multi"
    clients.skopeo(
        "copy", "--all", "--dest-tls-verify=false", layout.ref("multi"), f"docker://{reference}"
    )

    ctrd.ctr("images", "pull", "--plain-http", "--all-platforms", reference)
    assert ctrd.image_target(reference) == {"mediaType": OCI_INDEX, "digest": multi.digest}
    everything = [multi.digest]
    for image in multi.children:
        everything += [image.digest, *image.blob_digests]
    assert_content_matches(ctrd, layout, everything)
    assert set(everything) <= ctrd.content_digests()

    amd64 = multi.for_platform("linux/amd64")
    arm64 = multi.for_platform("linux/arm64")
    ctrd.ctr(
        "--namespace",
        "arm",
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "linux/arm64",
        reference,
    )
    arm_content = set(ctrd.ctr("--namespace", "arm", "content", "ls", "--quiet").stdout.split())
    assert {multi.digest, arm64.digest, *arm64.blob_digests} <= arm_content
    assert not set(amd64.layer_digests) & arm_content
