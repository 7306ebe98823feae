"""GET /v2/<name>/referrers/<digest>, with and without the artifactType filter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import Client, assert_error, push_blob, push_manifest, push_seeded
from tests.support.images import (
    EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Image,
    artifact_of,
    config_blob,
    digest_of,
    manifest_descriptor,
    oci_index,
    oci_manifest,
)

NAME = "refs/app"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


@pytest.fixture
async def subject(client: Client) -> Image:
    image = await push_seeded(client, NAME, "v1", "subject")
    await push_blob(client, NAME, EMPTY_CONFIG)
    return image


async def push_artifact(
    client: Client,
    subject: Image,
    artifact_type: str | None,
    content: bytes,
    *,
    config: Blob = EMPTY_CONFIG,
    annotations: dict[str, str] | None = None,
    name: str = NAME,
) -> bytes:
    artifact = artifact_of(subject, artifact_type, content, config=config, annotations=annotations)
    await push_blob(client, name, artifact.layers[0])
    resp = await push_manifest(client, name, artifact.digest, artifact.manifest)
    assert resp.headers["OCI-Subject"] == subject.digest
    return artifact.manifest


async def referrers(
    client: Client, digest: str, query: str = ""
) -> tuple[dict[str, str], dict[str, Any]]:
    resp = await client.get(f"/v2/{NAME}/referrers/{digest}{query}")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == OCI_INDEX
    body = await resp.json(content_type=None)
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    return dict(resp.headers), body


async def test_referrers_lists_every_artifact(client: Client, subject: Image) -> None:
    sbom = await push_artifact(client, subject, SBOM, b"sbom", annotations={"format": "spdx"})
    sig = await push_artifact(client, subject, SIGNATURE, b"sig")
    headers, body = await referrers(client, subject.digest)
    assert "OCI-Filters-Applied" not in headers
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert set(by_digest) == {digest_of(sbom), digest_of(sig)}
    assert by_digest[digest_of(sbom)] == {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(sbom),
        "size": len(sbom),
        "artifactType": SBOM,
        "annotations": {"format": "spdx"},
    }
    assert by_digest[digest_of(sig)]["artifactType"] == SIGNATURE
    assert by_digest[digest_of(sig)]["size"] == len(sig)


async def test_artifact_type_filter(client: Client, subject: Image) -> None:
    sbom = await push_artifact(client, subject, SBOM, b"sbom")
    await push_artifact(client, subject, SIGNATURE, b"sig")
    headers, body = await referrers(client, subject.digest, f"?artifactType={SBOM}")
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in body["manifests"]] == [digest_of(sbom)]
    headers, body = await referrers(client, subject.digest, "?artifactType=application/none")
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert body["manifests"] == []


async def test_artifact_type_defaults_to_the_config_media_type(
    client: Client, subject: Image
) -> None:
    config = config_blob("typed", "application/vnd.example.config.v1+json")
    await push_blob(client, NAME, config)
    manifest = await push_artifact(client, subject, None, b"untyped", config=config)
    _, body = await referrers(client, subject.digest)
    assert body["manifests"][0]["digest"] == digest_of(manifest)
    assert body["manifests"][0]["artifactType"] == config.media_type


async def test_index_referrer_without_artifact_type(client: Client, subject: Image) -> None:
    index = oci_index(
        [manifest_descriptor(subject.manifest)], subject=manifest_descriptor(subject.manifest)
    )
    await push_manifest(client, NAME, digest_of(index), index, OCI_INDEX)
    _, body = await referrers(client, subject.digest)
    assert body["manifests"] == [
        {"mediaType": OCI_INDEX, "digest": digest_of(index), "size": len(index)}
    ]


async def test_unknown_subject_gives_an_empty_200(client: Client, subject: Image) -> None:
    _, body = await referrers(client, digest_of(b"no such manifest"))
    assert body["manifests"] == []


async def test_unknown_repository_gives_an_empty_200(client: Client) -> None:
    resp = await client.get(f"/v2/refs/nothing/referrers/{digest_of(b'x')}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == OCI_INDEX
    assert (await resp.json(content_type=None))["manifests"] == []


async def test_referrer_pushed_before_its_subject(client: Client) -> None:
    await push_blob(client, NAME, EMPTY_CONFIG)
    image_config = config_blob("later")
    later = oci_manifest(image_config)
    artifact = oci_manifest(EMPTY_CONFIG, artifact_type=SBOM, subject=manifest_descriptor(later))
    resp = await push_manifest(client, NAME, digest_of(artifact), artifact)
    assert resp.headers["OCI-Subject"] == digest_of(later)
    _, body = await referrers(client, digest_of(later))
    assert [d["digest"] for d in body["manifests"]] == [digest_of(artifact)]


async def test_referrers_are_per_repository(client: Client, subject: Image) -> None:
    await push_blob(client, "refs/other", EMPTY_CONFIG)
    await push_artifact(client, subject, SBOM, b"elsewhere", name="refs/other")
    _, body = await referrers(client, subject.digest)
    assert body["manifests"] == []


async def test_deleted_referrer_disappears(client: Client, subject: Image) -> None:
    sbom = await push_artifact(client, subject, SBOM, b"sbom")
    resp = await client.delete(f"/v2/{NAME}/manifests/{digest_of(sbom)}")
    assert resp.status == 202
    _, body = await referrers(client, subject.digest)
    assert body["manifests"] == []


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "latest", "sha256:" + "A" * 64])
async def test_invalid_digest_is_400(client: Client, bad: str) -> None:
    resp = await client.get(f"/v2/{NAME}/referrers/{bad}")
    await assert_error(resp, 400, "DIGEST_INVALID")


async def test_artifact_type_filter_with_a_plus_sign(client: Client, subject: Image) -> None:
    spdx = "application/spdx+json"
    manifest = await push_artifact(client, subject, spdx, b"spdx")
    await push_artifact(client, subject, SBOM, b"other")
    headers, body = await referrers(client, subject.digest, "?artifactType=application/spdx%2Bjson")
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in body["manifests"]] == [digest_of(manifest)]
