"""moorage.registry.manifests: validation and what a manifest references."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moorage import mediatypes as mt
from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.model import Reference
from moorage.registry.manifests import parse_manifest


def desc(media_type: str, seed: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(Digest.of(seed.encode())), "size": 1, **extra}


def parse(body: dict[str, Any] | bytes, content_type: str | None = None):  # type: ignore[no-untyped-def]
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_manifest(payload, content_type, Digest.of(payload))


def image(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", "c"),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", "l1")],
        **extra,
    }


def test_image_manifest_references_config_and_layers() -> None:
    record = parse(image(), mt.OCI_MANIFEST)
    assert record.media_type == mt.OCI_MANIFEST
    assert record.references == (
        Reference("blob", str(Digest.of(b"c"))),
        Reference("blob", str(Digest.of(b"l1"))),
    )
    assert record.artifact_type == "application/vnd.oci.image.config.v1+json"
    assert record.subject is None


def test_artifact_with_subject_and_annotations() -> None:
    body = image(
        artifactType="application/vnd.example.sbom",
        subject=desc(mt.OCI_MANIFEST, "subject"),
        annotations={"org.example": "yes"},
    )
    body["config"] = desc(mt.OCI_EMPTY, "{}")
    record = parse(body)
    assert record.artifact_type == "application/vnd.example.sbom"
    assert record.subject == str(Digest.of(b"subject"))
    assert json.loads(record.annotations or "") == {"org.example": "yes"}


def test_index_references_children() -> None:
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [desc(mt.OCI_MANIFEST, "a"), desc(mt.OCI_MANIFEST, "b")],
    }
    record = parse(body, mt.OCI_INDEX)
    assert [r.kind for r in record.references] == ["manifest", "manifest"]


def test_media_type_inferred_when_absent() -> None:
    body = image()
    del body["mediaType"]
    assert parse(body).media_type == mt.OCI_MANIFEST
    assert parse(body, mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST
    index = {"schemaVersion": 2, "manifests": []}
    assert parse(index).media_type == mt.OCI_INDEX


def test_foreign_layers_with_urls_need_not_be_present() -> None:
    body = image()
    body["mediaType"] = mt.DOCKER_MANIFEST
    body["layers"].append(
        desc("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "f", urls=["https://x"])
    )
    assert len(parse(body, mt.DOCKER_MANIFEST).references) == 2


@pytest.mark.parametrize(
    ("payload", "content_type", "fragment"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b"\xff\xfe", None, "not valid JSON"),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), None, "schema 1"),
        (json.dumps(image()).encode(), mt.DOCKER_SCHEMA1_SIGNED, "schema 1"),
        (json.dumps(image(schemaVersion=3)).encode(), None, "schemaVersion"),
        (json.dumps(image()).encode(), mt.OCI_INDEX, "does not match"),
        (json.dumps(image(mediaType="text/plain")).encode(), None, "unsupported manifest"),
        (json.dumps({**image(), "config": None}).encode(), None, "config"),
        (json.dumps({**image(), "layers": {}}).encode(), None, "layers"),
        (
            json.dumps(
                image(layers=[{"mediaType": "a/b", "digest": "sha256:x", "size": 1}])
            ).encode(),
            None,
            "digest",
        ),
        (json.dumps(image(layers=[desc("a/b", "x", size=-1)])).encode(), None, "size"),
        (json.dumps(image(layers=[desc("a/b", "x", size=True)])).encode(), None, "size"),
        (json.dumps(image(annotations={"a": 1})).encode(), None, "annotations"),
        (json.dumps(image(artifactType="not a type")).encode(), None, "artifactType"),
        (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX}).encode(), None, "manifests"),
    ],
)
def test_invalid_manifests(payload: bytes, content_type: str | None, fragment: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse(payload, content_type)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    assert fragment in info.value.message
