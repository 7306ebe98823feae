"""An OCI image layout on disk (image-spec ``image-layout.md``), written with canonical JSON.

    DIR/oci-layout              {"imageLayoutVersion":"1.0.0"}
    DIR/index.json              the image manifest (tagged) and the SBOM manifest referring to it
    DIR/blobs/sha256/<hex>      layers, the config, the SBOM, the manifests

Every JSON document is written with sorted keys and no spaces, so its bytes, and the digests
that name them, depend only on its content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def json(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


class LayoutWriter:
    """Writes blobs into ``DIR/blobs/sha256`` and, last, ``index.json`` and ``oci-layout``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        algorithm, _, hex_digest = digest.partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64:
            raise ValueError(f"not a sha256 digest: {digest}")
        return self.blobs / hex_digest

    def add_bytes(self, media_type: str, data: bytes) -> Descriptor:
        descriptor = Descriptor(media_type, sha256_digest(data), len(data))
        path = self._path(descriptor.digest)
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            os.chmod(partial, 0o644)
            partial.replace(path)
        return descriptor

    def add_json(self, media_type: str, document: Any) -> Descriptor:
        return self.add_bytes(media_type, canonical_json(document))

    def add_file(self, media_type: str, source: Path, digest: str, size: int) -> Descriptor:
        """Move a file whose digest is already known (a layer) into the blobs."""
        path = self._path(digest)
        shutil.move(source, path)
        os.chmod(path, 0o644)
        return Descriptor(media_type, digest, size)

    def finish(self, manifests: list[dict[str, Any]]) -> Descriptor:
        """Write ``index.json`` listing ``manifests`` (descriptors) and the ``oci-layout`` file."""
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        data = canonical_json(index)
        (self.directory / "index.json").write_bytes(data)
        (self.directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        return Descriptor(OCI_INDEX, sha256_digest(data), len(data))


def empty_descriptor() -> dict[str, Any]:
    """The descriptor of ``{}``, the config of an artifact that has none (image-spec 1.1)."""
    return Descriptor(OCI_EMPTY, sha256_digest(EMPTY_JSON), len(EMPTY_JSON)).json(
        data=base64.b64encode(EMPTY_JSON).decode()
    )


@dataclass(frozen=True, slots=True)
class ReadLayout:
    """A layout read back: its index and a way to load blobs (for checks and tests)."""

    directory: Path

    @property
    def index(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.directory / "index.json").read_bytes())
        return loaded

    def blob(self, digest: str) -> bytes:
        data = (self.directory / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        if sha256_digest(data) != digest:
            raise ValueError(f"blob {digest} of {self.directory} does not match its digest")
        return data

    def json_blob(self, digest: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.blob(digest))
        return loaded

    def tagged(self, tag: str) -> dict[str, Any]:
        """The index entry whose ref.name is ``tag``."""
        for entry in self.index["manifests"]:
            if entry.get("annotations", {}).get(REF_NAME) == tag:
                return dict(entry)
        raise KeyError(f"{self.directory} has no manifest tagged {tag}")
