"""The distribution spec's four workflows (push, pull, content discovery, content management)
through the scale-out front door, where consecutive requests land on different replicas: what
one replica wrote, the next must read. The official conformance suite checks the same ground
by hand; these run in CI."""

from __future__ import annotations

import os

from tests.support.http import (
    location_path,
    push_blob,
    push_image,
    push_manifest,
    request,
    with_query,
)
from tests.support.images import (
    EMPTY_CONFIG,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Blob,
    artifact_of,
    image_of,
    random_image,
    sha256,
)
from tests.support.topology import Topology

OCTETS = {"Content-Type": "application/octet-stream"}


def everywhere(topology: Topology) -> list[str]:
    return [replica.address for replica in topology.replicas]


def test_push(topology: Topology, repo: str) -> None:
    front = topology.front.address
    # Monolithic: POST, then PUT with the whole body.
    layer = os.urandom(300_000)
    reply = request(front, "POST", f"/v2/{repo}/blobs/uploads/")
    assert reply.status == 202
    reply = request(
        front, "PUT", with_query(location_path(reply), digest=sha256(layer)), layer, OCTETS
    )
    assert reply.status == 201 and reply.header("Docker-Content-Digest") == sha256(layer)

    # Chunked: each PATCH, the status GET and the closing PUT on whichever replica.
    chunked = os.urandom(3 * 65536 + 17)
    location = location_path(request(front, "POST", f"/v2/{repo}/blobs/uploads/"))
    for start in range(0, len(chunked), 65536):
        piece = chunked[start : start + 65536]
        headers = {**OCTETS, "Content-Range": f"{start}-{start + len(piece) - 1}"}
        reply = request(front, "PATCH", location, piece, headers)
        assert reply.status == 202, (reply.status, reply.body)
        location = location_path(reply)
        status = request(front, "GET", location)
        assert status.status == 204 and status.header("Range") == f"0-{start + len(piece) - 1}"
    stale = request(front, "PATCH", location, b"x", {**OCTETS, "Content-Range": "0-0"})
    assert stale.status == 416  # out of order, wherever it lands
    reply = request(front, "PUT", with_query(location, digest=sha256(chunked)))
    assert reply.status == 201, (reply.status, reply.body)

    # Cross-repository mount, with and without ``from``.
    # Single request: POST with the digest and the whole body.
    config = b'{"architecture": "amd64", "os": "linux"}'
    reply = request(
        front, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(config)}", config, OCTETS
    )
    assert reply.status == 201 and reply.header("Docker-Content-Digest") == sha256(config)
    other = f"{repo}-mounted"
    reply = request(front, "POST", f"/v2/{other}/blobs/uploads/?mount={sha256(layer)}&from={repo}")
    assert reply.status == 201 and reply.header("Docker-Content-Digest") == sha256(layer)
    reply = request(front, "POST", f"/v2/{other}/blobs/uploads/?mount={sha256(chunked)}")
    assert reply.status == 201

    # A wrong digest stores nothing; a manifest needs its blobs.
    wrong = request(
        front, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(b'other')}", b"data", OCTETS
    )
    assert wrong.status == 400 and wrong.code == "DIGEST_INVALID"
    config_blob = Blob(config, OCI_CONFIG)
    missing = image_of(config_blob, [Blob(b"never pushed", OCI_LAYER_TAR)]).manifest
    reply = request(
        front, "PUT", f"/v2/{repo}/manifests/broken", missing, {"Content-Type": OCI_MANIFEST}
    )
    assert reply.status == 400 and reply.code == "MANIFEST_BLOB_UNKNOWN"

    payload = image_of(config_blob, [Blob(layer, OCI_LAYER_TAR), Blob(chunked, OCI_LAYER_TAR)])
    push_manifest(front, repo, "v1", payload.manifest, payload.media_type)
    for address in everywhere(topology):
        assert request(address, "GET", f"/v2/{repo}/blobs/{sha256(chunked)}").body == chunked
        reply = request(address, "HEAD", f"/v2/{repo}/manifests/v1")
        assert reply.status == 200 and reply.header("Docker-Content-Digest") == payload.digest
    reply = request(front, "GET", f"/v2/{repo}/manifests/broken")
    assert reply.status == 404 and reply.code == "MANIFEST_UNKNOWN"


def test_pull(topology: Topology, repo: str) -> None:
    front = topology.front.address
    image = push_image(front, repo, random_image(layer_sizes=(100_000,)), "latest")
    payload, layer = image.manifest, image.layers[0].data

    by_tag = request(front, "GET", f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert by_tag.status == 200 and by_tag.body == payload
    assert by_tag.header("Content-Type") == OCI_MANIFEST
    by_digest = request(front, "GET", f"/v2/{repo}/manifests/{sha256(payload)}")
    assert by_digest.status == 200 and by_digest.body == payload

    head = request(front, "HEAD", f"/v2/{repo}/blobs/{sha256(layer)}")
    assert head.status == 200 and head.header("Content-Length") == str(len(layer))
    assert head.header("Docker-Content-Digest") == sha256(layer)
    ranged = request(
        front, "GET", f"/v2/{repo}/blobs/{sha256(layer)}", headers={"Range": "bytes=1000-1999"}
    )
    assert ranged.status == 206 and ranged.body == layer[1000:2000]
    assert ranged.header("Content-Range") == f"bytes 1000-1999/{len(layer)}"

    unknown = request(front, "GET", f"/v2/{repo}/blobs/{sha256(b'nothing')}")
    assert unknown.status == 404 and unknown.code == "BLOB_UNKNOWN"
    unknown = request(front, "GET", f"/v2/{repo}/manifests/missing")
    assert unknown.status == 404 and unknown.code == "MANIFEST_UNKNOWN"


def test_content_discovery(topology: Topology, repo: str) -> None:
    front = topology.front.address
    subject = push_image(front, repo, random_image(layer_sizes=(1000,)), "base")
    tags = [f"t{i:02d}" for i in range(7)]
    for tag in tags:
        push_manifest(front, repo, tag, subject.manifest, subject.media_type)

    page = request(front, "GET", f"/v2/{repo}/tags/list?n=3")
    assert page.json()["tags"] == ["base", "t00", "t01"]
    link = page.header("Link")
    assert link is not None and "last=t01" in link and 'rel="next"' in link
    page = request(front, "GET", f"/v2/{repo}/tags/list?n=3&last=t01")
    assert page.json()["tags"] == ["t02", "t03", "t04"]
    assert request(front, "GET", f"/v2/{repo}/tags/list").json()["tags"] == ["base", *tags]

    push_blob(front, repo, EMPTY_CONFIG.data)
    signatures = []
    for kind in ("application/vnd.example.sbom", "application/vnd.example.signature"):
        # The artifact's one layer is the subject's layer, already in the repository.
        artifact = artifact_of(subject, kind, subject.layers[0])
        reply = push_manifest(front, repo, artifact.digest, artifact.manifest, OCI_MANIFEST)
        assert reply.header("OCI-Subject") == subject.digest
        signatures.append(artifact.digest)

    for address in everywhere(topology):
        found = request(address, "GET", f"/v2/{repo}/referrers/{subject.digest}").json()
        assert sorted(m["digest"] for m in found["manifests"]) == sorted(signatures)
    filtered = request(
        front,
        "GET",
        f"/v2/{repo}/referrers/{subject.digest}?artifactType=application/vnd.example.signature",
    )
    assert filtered.header("OCI-Filters-Applied") == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [signatures[1]]


def test_content_management(topology: Topology, repo: str) -> None:
    front = topology.front.address
    first = push_image(front, repo, random_image(layer_sizes=(5000,)), "one")
    # The same config and layer, another manifest.
    second = image_of(first.config, first.layers, annotations={"n": "2"})
    push_manifest(front, repo, "two", second.manifest, second.media_type)
    layer = first.layers[0].data

    assert request(front, "DELETE", f"/v2/{repo}/manifests/one").status == 202
    for address in everywhere(topology):
        assert request(address, "GET", f"/v2/{repo}/manifests/one").status == 404
        assert request(address, "GET", f"/v2/{repo}/manifests/{first.digest}").status == 200
    assert request(front, "GET", f"/v2/{repo}/tags/list").json()["tags"] == ["two"]

    assert request(front, "DELETE", f"/v2/{repo}/manifests/{second.digest}").status == 202
    for address in everywhere(topology):
        assert request(address, "GET", f"/v2/{repo}/manifests/two").status == 404
        assert request(address, "GET", f"/v2/{repo}/manifests/{second.digest}").status == 404

    assert request(front, "DELETE", f"/v2/{repo}/blobs/{sha256(layer)}").status == 202
    for address in everywhere(topology):
        gone = request(address, "GET", f"/v2/{repo}/blobs/{sha256(layer)}")
        assert gone.status == 404 and gone.code == "BLOB_UNKNOWN"
    again = request(front, "DELETE", f"/v2/{repo}/blobs/{sha256(layer)}")
    assert again.status == 404 and again.code == "BLOB_UNKNOWN"
