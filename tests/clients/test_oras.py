"""oras-py pushes artifacts that refer to an image (``subject``); the referrers API lists them.

oras-py quirks (0.2.43):
- ``Subject.from_manifest(dict)`` hashes ``json.dumps(dict)``, not the bytes the registry
  holds, so its digest is wrong for most manifests: build ``Subject`` from the real digest,
  media type and size.
- ``push`` has no ``artifactType``; the artifact type is the config media type, set with
  ``manifest_config=":<media type>"`` (empty path: oras pushes the ``{}`` config).
- Files must be under the current directory unless ``disable_path_validation=True``; a
  layer's title annotation is the file's base name, and ``pull`` writes it there.
- A request that raises (e.g. a dropped keep-alive connection) is retried after sleeping
  3, 5, 11, 29, 83 s (its retry decorator), so server errors show up as slow tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import oras.client
import oras.oci
import pytest

from tests.support.clients import Clients, RegistryHttp
from tests.support.images import OCI_INDEX, OCI_MANIFEST, new_image
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients

SBOM_TYPE = "application/vnd.moorage.test.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.moorage.test.signature.v1"


def push_artifact(
    client: oras.client.OrasClient,
    target: str,
    files: list[tuple[Path, str]],
    artifact_type: str,
    subject: oras.oci.Subject,
    annotations: dict[str, str],
) -> Any:
    return client.push(
        target=target,
        files=[f"{path}:{media_type}" for path, media_type in files],
        manifest_config=f":{artifact_type}",
        manifest_annotations=annotations,
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )


def test_artifact_with_subject_and_referrers(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(100_000,))
    clients.skopeo(
        "copy",
        "--dest-tls-verify=false",
        layout.ref("v1"),
        f"docker://{registry.address}/{repo}:v1",
    )
    subject_manifest = http.manifest(repo, "v1")
    assert subject_manifest.digest == image.digest
    subject = oras.oci.Subject(
        mediaType=OCI_MANIFEST, digest=image.digest, size=len(image.manifest)
    )

    client = oras.client.OrasClient(hostname=registry.address, insecure=True)
    work = tmp_path / "artifacts"
    work.mkdir()
    sbom = work / "sbom.json"
    sbom.write_bytes(b'{"packages": ["' + os.urandom(16).hex().encode() + b'"]}')
    blob = work / "extra.bin"
    blob.write_bytes(os.urandom(300_000))
    signature = work / "signature.sig"
    signature.write_bytes(os.urandom(512))

    response = push_artifact(
        client,
        f"{registry.address}/{repo}:sbom",
        [(sbom, "application/json"), (blob, "application/octet-stream")],
        SBOM_TYPE,
        subject,
        {"org.example.kind": "sbom"},
    )
    assert response.status_code == 201
    sbom_digest = response.headers["Docker-Content-Digest"]
    assert response.headers.get("OCI-Subject") == image.digest
    response = push_artifact(
        client,
        f"{registry.address}/{repo}:signature",
        [(signature, "application/octet-stream")],
        SIGNATURE_TYPE,
        subject,
        {"org.example.kind": "signature"},
    )
    signature_digest = response.headers["Docker-Content-Digest"]

    # The stored artifact manifest names its subject.
    stored = http.manifest(repo, sbom_digest).json
    assert stored["subject"] == {
        "mediaType": OCI_MANIFEST,
        "digest": image.digest,
        "size": len(image.manifest),
    }
    assert stored["config"]["mediaType"] == SBOM_TYPE

    # Referrers: both artifacts, with their artifact types and annotations.
    referrers = http.referrers(repo, image.digest)
    assert referrers.status == 200
    assert referrers.headers["Content-Type"].startswith(OCI_INDEX)
    body = referrers.json()
    assert body["mediaType"] == OCI_INDEX
    manifests = body["manifests"]
    assert isinstance(manifests, list)
    by_digest = {d["digest"]: d for d in manifests}
    assert set(by_digest) == {sbom_digest, signature_digest}
    assert by_digest[sbom_digest]["artifactType"] == SBOM_TYPE
    assert by_digest[sbom_digest]["annotations"] == {"org.example.kind": "sbom"}
    assert by_digest[sbom_digest]["mediaType"] == OCI_MANIFEST
    assert by_digest[sbom_digest]["size"] == len(http.manifest(repo, sbom_digest).payload)
    assert by_digest[signature_digest]["artifactType"] == SIGNATURE_TYPE

    filtered = http.referrers(repo, image.digest, SIGNATURE_TYPE)
    assert filtered.headers.get("OCI-Filters-Applied") == "artifactType"
    filtered_manifests = filtered.json()["manifests"]
    assert isinstance(filtered_manifests, list)
    assert [d["digest"] for d in filtered_manifests] == [signature_digest]

    # A digest nothing refers to: an empty index, not an error.
    empty = http.referrers(repo, sbom_digest)
    assert empty.status == 200
    assert empty.json()["manifests"] == []

    # Pull the artifact back: same files, same bytes.
    out = tmp_path / "pulled"
    pulled = client.pull(target=f"{registry.address}/{repo}@{sbom_digest}", outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == ["extra.bin", "sbom.json"]
    assert (out / "sbom.json").read_bytes() == sbom.read_bytes()
    assert (out / "extra.bin").read_bytes() == blob.read_bytes()
    assert client.get_tags(f"{registry.address}/{repo}") == sorted(["v1", "sbom", "signature"])

    # The subject image itself is unchanged.
    assert http.manifest(repo, "v1").payload == image.manifest
