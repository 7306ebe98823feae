"""Parsing and validating manifests: what a manifest is, and what it needs to exist."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from moorage import mediatypes as mt
from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.model import ManifestRecord, Reference

_MEDIA_TYPE_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, message)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.fullmatch(media_type):
        raise _invalid(f"{where} has an invalid or missing mediaType")
    digest = value.get("digest")
    if not isinstance(digest, str):
        raise _invalid(f"{where} has no digest")
    try:
        digest = str(Digest.parse(digest))
    except RegistryError:
        raise _invalid(f"{where} has an invalid digest {digest[:150]!r}") from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where} has an invalid size")
    urls = value.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise _invalid(f"{where} has invalid urls")
    return Descriptor(media_type, digest, size, tuple(urls))


def _descriptors(value: Any, where: str) -> list[Descriptor]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{where} must be a list of descriptors")
    return [_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _media_type(header: str | None, body: dict[str, Any]) -> str:
    """The manifest's media type, from its body, or else ``header`` (the request's
    ``Content-Type``), or else its shape."""
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    if header in mt.SCHEMA1 or declared in mt.SCHEMA1 or body.get("schemaVersion") == 1:
        raise _invalid(
            "Docker image manifest schema 1 is not supported: it was deprecated in 2017 and "
            "removed from Docker; push the image in Docker schema 2 or OCI format"
        )
    generic = header in (None, "application/json", "application/octet-stream")
    if declared is not None and not generic and header != declared.lower():
        raise _invalid(
            f"Content-Type {header!r} does not match the manifest's mediaType {declared!r}"
        )
    media_type = declared or header
    if media_type in (None, "application/json", "application/octet-stream"):
        # OCI manifests may omit mediaType; infer it from the shape.
        media_type = mt.OCI_INDEX if "manifests" in body else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise _invalid(
            f"unsupported manifest media type {media_type!r}; supported: "
            + ", ".join(sorted(mt.MANIFESTS))
        )
    return media_type


def parse_manifest(payload: bytes, content_type: str | None, digest: Digest) -> ManifestRecord:
    """Validate a pushed manifest and describe what it references.

    ``content_type`` is the media type the request declared (lowercase, without parameters),
    if any. ``digest`` is the digest of ``payload`` (computed by the caller with the algorithm
    the client asked for).
    """
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and integers too long to convert;
        # RecursionError, absurdly deep nesting.
        raise _invalid(f"manifest is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise _invalid("manifest must be a JSON object")
    media_type = _media_type(content_type, body)
    if body.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")

    references: list[Reference] = []
    artifact_type = body.get("artifactType")
    if artifact_type is not None and (
        not isinstance(artifact_type, str) or not _MEDIA_TYPE_RE.fullmatch(artifact_type)
    ):
        raise _invalid("artifactType must be a media type")

    if media_type in mt.IMAGE_MANIFESTS:
        if "config" not in body:
            raise _invalid("image manifest has no config descriptor")
        config = _descriptor(body["config"], "config")
        layers = _descriptors(body.get("layers"), "layers")
        references.append(Reference("blob", config.digest))
        for layer in layers:
            if layer.media_type in mt.NON_DISTRIBUTABLE_LAYERS and layer.urls:
                continue
            references.append(Reference("blob", layer.digest))
        if artifact_type is None:
            # Referrers API: an image manifest's artifactType defaults to its config's type.
            artifact_type = config.media_type
    else:
        if "manifests" not in body:
            raise _invalid("index has no manifests list")
        for child in _descriptors(body["manifests"], "manifests"):
            references.append(Reference("manifest", child.digest))

    subject = None
    if body.get("subject") is not None:
        subject = _descriptor(body["subject"], "subject").digest

    annotations = body.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
    ):
        raise _invalid("annotations must map strings to strings")
    return ManifestRecord(
        digest=str(digest),
        media_type=media_type,
        payload=payload,
        artifact_type=artifact_type,
        subject=subject,
        annotations=json.dumps(annotations, sort_keys=True) if annotations else None,
        references=tuple(dict.fromkeys(references)),
    )
