"""PUT/GET/HEAD/DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

import json

import pytest

from tests.support.app import (
    Client,
    MakeEnv,
    as_body,
    assert_error,
    get_manifest,
    push_blob,
    push_manifest,
    push_seeded,
    stream,
    tags,
)
from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Image,
    config_blob,
    digest_of,
    docker_manifest,
    docker_manifest_list,
    dumps,
    layer_blob,
    manifest_descriptor,
    oci_index,
    oci_manifest,
    platform,
)

NAME = "org/manifests"
MIB4 = 4 * 1024 * 1024


async def push_blobs(client: Client, name: str, *blobs: Blob) -> None:
    for blob in blobs:
        await push_blob(client, name, blob)


async def test_oci_manifest_by_tag_and_digest(client: Client) -> None:
    image = await push_seeded(client, NAME, "v1", "oci")
    for reference in ("v1", image.digest):
        resp, body = await get_manifest(client, NAME, reference)
        assert resp.status == 200
        assert body == image.manifest
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert resp.headers["Docker-Content-Digest"] == image.digest
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        head = await client.head(f"/v2/{NAME}/manifests/{reference}")
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(image.manifest))
        assert head.headers["Docker-Content-Digest"] == image.digest
        assert head.headers["Content-Type"] == OCI_MANIFEST
        assert await head.read() == b""


async def test_push_by_digest_creates_no_tag(client: Client) -> None:
    config, layer = config_blob("bydigest"), layer_blob("bydigest")
    await push_blobs(client, NAME, config, layer)
    manifest = oci_manifest(config, [layer])
    await push_manifest(client, NAME, digest_of(manifest), manifest)
    assert await tags(client, NAME) == []
    resp, body = await get_manifest(client, NAME, digest_of(manifest))
    assert resp.status == 200 and body == manifest


async def test_bytes_are_stored_exactly(client: Client) -> None:
    config = config_blob("exact")
    await push_blob(client, NAME, config)
    # Odd whitespace and key order: the registry must not re-serialise.
    manifest = (
        b'{   "schemaVersion":2,\n\n"mediaType" : "' + OCI_MANIFEST.encode() + b'",'
        b'"layers":[],   "config":' + json.dumps(config.descriptor()).encode() + b"}   \n"
    )
    await push_manifest(client, NAME, "exact", manifest)
    resp, body = await get_manifest(client, NAME, "exact")
    assert body == manifest
    assert resp.headers["Docker-Content-Digest"] == digest_of(manifest)


async def test_oci_index(client: Client) -> None:
    amd = await push_seeded(client, NAME, "amd64", "amd")
    arm = await push_seeded(client, NAME, "arm64", "arm")
    index = oci_index(
        [
            manifest_descriptor(amd.manifest, platform=platform("amd64")),
            manifest_descriptor(arm.manifest, platform=platform("arm64")),
        ]
    )
    await push_manifest(client, NAME, "multi", index, OCI_INDEX)
    for reference in ("multi", digest_of(index)):
        resp, body = await get_manifest(client, NAME, reference)
        assert resp.status == 200
        assert body == index
        assert resp.headers["Content-Type"] == OCI_INDEX
        assert resp.headers["Docker-Content-Digest"] == digest_of(index)


async def test_docker_manifest_and_manifest_list(client: Client) -> None:
    config = config_blob("docker", DOCKER_CONFIG)
    layer = layer_blob("docker", media_type=DOCKER_LAYER_GZIP)
    await push_blobs(client, NAME, config, layer)
    manifest = docker_manifest(config, [layer])
    await push_manifest(client, NAME, "docker", manifest, DOCKER_MANIFEST)
    resp, body = await get_manifest(client, NAME, "docker", accept=DOCKER_MANIFEST)
    assert resp.status == 200 and body == manifest
    assert resp.headers["Content-Type"] == DOCKER_MANIFEST
    manifest_list = docker_manifest_list(
        [manifest_descriptor(manifest, DOCKER_MANIFEST, platform=platform("amd64"))]
    )
    await push_manifest(client, NAME, "docker-list", manifest_list, DOCKER_MANIFEST_LIST)
    resp, body = await get_manifest(client, NAME, "docker-list", accept=DOCKER_MANIFEST_LIST)
    assert resp.status == 200 and body == manifest_list
    assert resp.headers["Content-Type"] == DOCKER_MANIFEST_LIST


async def test_artifact_with_subject_gets_oci_subject_header(client: Client) -> None:
    image = await push_seeded(client, NAME, "v1", "subject")
    await push_blob(client, NAME, EMPTY_CONFIG)
    payload = Blob(b"signature bytes", "application/vnd.example.signature.v1")
    await push_blob(client, NAME, payload)
    artifact = oci_manifest(
        EMPTY_CONFIG,
        [payload],
        artifact_type="application/vnd.example.signature.v1",
        subject=manifest_descriptor(image.manifest),
    )
    resp = await push_manifest(client, NAME, digest_of(artifact), artifact)
    assert resp.headers["OCI-Subject"] == image.digest
    resp, body = await get_manifest(client, NAME, digest_of(artifact))
    assert resp.status == 200 and body == artifact


async def test_subject_may_be_pushed_after_its_referrer(client: Client) -> None:
    await push_blob(client, NAME, EMPTY_CONFIG)
    absent = manifest_descriptor(b'{"not": "pushed yet"}')
    artifact = oci_manifest(EMPTY_CONFIG, artifact_type="application/vnd.example", subject=absent)
    resp = await push_manifest(client, NAME, "sig", artifact)
    assert resp.headers["OCI-Subject"] == absent["digest"]


async def test_index_with_subject_gets_oci_subject_header(client: Client) -> None:
    image = await push_seeded(client, NAME, "v1", "index-subject")
    index = oci_index(
        [manifest_descriptor(image.manifest)],
        artifact_type="application/vnd.example.bundle",
        subject=manifest_descriptor(image.manifest),
    )
    resp = await push_manifest(client, NAME, digest_of(index), index, OCI_INDEX)
    assert resp.headers["OCI-Subject"] == image.digest


async def test_no_oci_subject_without_subject(client: Client) -> None:
    config = config_blob("plain")
    await push_blob(client, NAME, config)
    resp = await push_manifest(client, NAME, "plain", oci_manifest(config))
    assert "OCI-Subject" not in resp.headers


@pytest.fixture
async def oci_image(client: Client) -> Image:
    return await push_seeded(client, NAME, "v1", "accept")


@pytest.mark.parametrize(
    "accept",
    [
        OCI_MANIFEST,
        f"{DOCKER_MANIFEST}, {OCI_MANIFEST}",
        f"{DOCKER_MANIFEST};q=0.9,{OCI_MANIFEST};q=0.5",
        "*/*",
        "application/*",
        f"{OCI_MANIFEST.upper()}",
    ],
)
async def test_accept_admitting_the_type(client: Client, oci_image: Image, accept: str) -> None:
    resp, body = await get_manifest(client, NAME, "v1", accept=accept)
    assert resp.status == 200
    assert body == oci_image.manifest
    assert resp.headers["Content-Type"] == OCI_MANIFEST


async def test_accept_on_several_header_lines(client: Client, oci_image: Image) -> None:
    """containers/image sends one Accept line per media type."""
    resp = await client.get(
        f"/v2/{NAME}/manifests/v1",
        headers=[("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)],
    )
    assert resp.status == 200
    assert await resp.read() == oci_image.manifest
    resp = await client.get(
        f"/v2/{NAME}/manifests/v1",
        headers=[("Accept", DOCKER_MANIFEST), ("Accept", OCI_INDEX)],
    )
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("accept", [DOCKER_MANIFEST, f"{DOCKER_MANIFEST}, {OCI_INDEX}"])
async def test_accept_excluding_the_type_is_404(
    client: Client, oci_image: Image, accept: str
) -> None:
    resp, _ = await get_manifest(client, NAME, "v1", accept=accept)
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")
    head = await client.head(f"/v2/{NAME}/manifests/v1", headers={"Accept": accept})
    assert head.status == 404


async def test_content_type_parameters_are_ignored(client: Client) -> None:
    config = config_blob("params")
    await push_blob(client, NAME, config)
    manifest = oci_manifest(config)
    await push_manifest(client, NAME, "params", manifest, f"{OCI_MANIFEST}; charset=utf-8")
    resp, _ = await get_manifest(client, NAME, "params")
    assert resp.headers["Content-Type"] == OCI_MANIFEST


async def test_manifest_without_media_type_field(client: Client) -> None:
    config = config_blob("nomt")
    await push_blob(client, NAME, config)
    manifest = oci_manifest(config, with_media_type=False)
    await push_manifest(client, NAME, "nomt", manifest, OCI_MANIFEST)
    resp, body = await get_manifest(client, NAME, "nomt")
    assert body == manifest
    assert resp.headers["Content-Type"] == OCI_MANIFEST


async def test_missing_blob_is_manifest_blob_unknown(client: Client) -> None:
    config, layer = config_blob("missing"), layer_blob("missing")
    await push_blob(client, NAME, config)
    resp = await client.put(
        f"/v2/{NAME}/manifests/broken",
        data=oci_manifest(config, [layer]),
        headers={"Content-Type": OCI_MANIFEST},
    )
    await assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")
    resp = await client.put(
        f"/v2/{NAME}/manifests/broken",
        data=oci_manifest(config_blob("absent config"), []),
        headers={"Content-Type": OCI_MANIFEST},
    )
    await assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")
    resp, _ = await get_manifest(client, NAME, "broken")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


async def test_blob_in_another_repository_does_not_count(client: Client) -> None:
    config = config_blob("elsewhere")
    await push_blob(client, "org/other", config)
    resp = await client.put(
        f"/v2/{NAME}/manifests/v1",
        data=oci_manifest(config),
        headers={"Content-Type": OCI_MANIFEST},
    )
    await assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")


async def test_missing_child_manifest_is_manifest_blob_unknown(client: Client) -> None:
    image = await push_seeded(client, NAME, "v1", "child")
    index = oci_index(
        [manifest_descriptor(image.manifest), manifest_descriptor(b'{"schemaVersion": 2}')]
    )
    resp = await client.put(
        f"/v2/{NAME}/manifests/multi", data=index, headers={"Content-Type": OCI_INDEX}
    )
    await assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")


async def test_non_distributable_layer_with_urls_need_not_exist(client: Client) -> None:
    config = config_blob("foreign")
    await push_blob(client, NAME, config)
    foreign = Blob(b"foreign layer", "application/vnd.oci.image.layer.nondistributable.v1.tar")
    manifest = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [foreign.descriptor(urls=["https://example.com/layer"])],
        }
    )
    await push_manifest(client, NAME, "foreign", manifest)


async def test_schema1_is_refused_with_a_clear_message(client: Client) -> None:
    schema1 = dumps(
        {
            "schemaVersion": 1,
            "name": NAME,
            "tag": "old",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": digest_of(b"layer")}],
            "history": [{"v1Compatibility": "{}"}],
            "signatures": [],
        }
    )
    for content_type in (DOCKER_SCHEMA1_SIGNED, "application/json", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        resp = await client.put(f"/v2/{NAME}/manifests/old", data=schema1, headers=headers)
        error = await assert_error(resp, 400, "MANIFEST_INVALID")
        assert "schema 1" in error["message"]


def padded_manifest(config: Blob, size: int) -> bytes:
    body = json.loads(oci_manifest(config))
    body["annotations"] = {"padding": ""}
    base = len(dumps(body))
    body["annotations"]["padding"] = "x" * (size - base)
    payload = dumps(body)
    assert len(payload) == size
    return payload


async def test_manifest_of_exactly_4_mib_is_accepted(client: Client) -> None:
    config = config_blob("big")
    await push_blob(client, NAME, config)
    manifest = padded_manifest(config, MIB4)
    await push_manifest(client, NAME, "big", manifest)
    resp, body = await get_manifest(client, NAME, "big")
    assert resp.status == 200
    assert body == manifest


async def test_manifest_over_4_mib_is_413(client: Client) -> None:
    config = config_blob("big")
    await push_blob(client, NAME, config)
    manifest = padded_manifest(config, MIB4 + 1)
    resp = await client.put(
        f"/v2/{NAME}/manifests/big", data=as_body(manifest), headers={"Content-Type": OCI_MANIFEST}
    )
    assert resp.status == 413, await resp.text()
    resp = await client.put(
        f"/v2/{NAME}/manifests/big",
        data=stream(manifest, 64 * 1024),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert resp.status == 413, await resp.text()
    resp, _ = await get_manifest(client, NAME, "big")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


async def test_manifest_limit_is_configurable(make_env: MakeEnv) -> None:
    env = await make_env(manifests={"max_size": 2048})
    config = config_blob("limit")
    await push_blob(env.client, NAME, config)
    await push_manifest(env.client, NAME, "ok", padded_manifest(config, 2048))
    resp = await env.client.put(
        f"/v2/{NAME}/manifests/big",
        data=padded_manifest(config, 2049),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert resp.status == 413


async def test_streamed_manifest_within_the_limit(client: Client) -> None:
    config = config_blob("streamed")
    await push_blob(client, NAME, config)
    manifest = padded_manifest(config, 300_000)
    resp = await client.put(
        f"/v2/{NAME}/manifests/streamed",
        data=stream(manifest, 10_000),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert resp.status == 201, await resp.text()
    resp, body = await get_manifest(client, NAME, "streamed")
    assert body == manifest


async def test_retag_moves_the_tag(client: Client) -> None:
    first = await push_seeded(client, NAME, "latest", "first")
    second = await push_seeded(client, NAME, "latest", "second")
    resp, body = await get_manifest(client, NAME, "latest")
    assert body == second.manifest
    resp, body = await get_manifest(client, NAME, first.digest)
    assert resp.status == 200 and body == first.manifest


async def test_delete_by_tag(client: Client) -> None:
    image = await push_seeded(client, NAME, "v1", "deltag")
    await push_manifest(client, NAME, "v2", image.manifest)
    resp = await client.delete(f"/v2/{NAME}/manifests/v1")
    assert resp.status == 202
    resp, _ = await get_manifest(client, NAME, "v1")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")
    resp, body = await get_manifest(client, NAME, image.digest)
    assert resp.status == 200 and body == image.manifest
    resp, body = await get_manifest(client, NAME, "v2")
    assert resp.status == 200 and body == image.manifest
    assert await tags(client, NAME) == ["v2"]
    resp = await client.delete(f"/v2/{NAME}/manifests/v1")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


async def test_delete_by_digest_removes_its_tags(client: Client) -> None:
    image = await push_seeded(client, NAME, "v1", "deldigest")
    await push_manifest(client, NAME, "also", image.manifest)
    resp = await client.delete(f"/v2/{NAME}/manifests/{image.digest}")
    assert resp.status == 202
    for reference in (image.digest, "v1", "also"):
        resp, _ = await get_manifest(client, NAME, reference)
        await assert_error(resp, 404, "MANIFEST_UNKNOWN")
    assert await tags(client, NAME) == []
    resp = await client.delete(f"/v2/{NAME}/manifests/{image.digest}")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")
    # Its blobs are still there and the manifest can be pushed again.
    await push_manifest(client, NAME, "v1", image.manifest)


async def test_delete_disabled(make_env: MakeEnv) -> None:
    env = await make_env(delete={"enabled": False})
    image = await push_seeded(env.client, NAME, "v1", "nodelete")
    resp = await env.client.delete(f"/v2/{NAME}/manifests/v1")
    await assert_error(resp, 405, "UNSUPPORTED")
    resp = await env.client.delete(f"/v2/{NAME}/manifests/{image.digest}")
    await assert_error(resp, 405, "UNSUPPORTED")
    resp, body = await get_manifest(env.client, NAME, "v1")
    assert body == image.manifest


async def test_unknown_manifest_and_unknown_repository(client: Client) -> None:
    await push_seeded(client, NAME, "v1", "exists")
    resp, _ = await get_manifest(client, NAME, "nope")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")
    resp, _ = await get_manifest(client, NAME, digest_of(b"nope"))
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")
    resp, _ = await get_manifest(client, "org/never", "v1")
    assert resp.status == 404
    body = await resp.json()
    assert body["errors"][0]["code"] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")


async def test_put_by_digest_must_match_the_body(client: Client) -> None:
    config = config_blob("mismatch")
    await push_blob(client, NAME, config)
    manifest = oci_manifest(config)
    resp = await client.put(
        f"/v2/{NAME}/manifests/{digest_of(manifest + b' ')}",
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    await assert_error(resp, 400, "DIGEST_INVALID")
    resp, _ = await get_manifest(client, NAME, digest_of(manifest))
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")
