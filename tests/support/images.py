"""Test images made offline: OCI image layouts written by hand, with random content.

Layers are gzip'd tars of random files, so every image is unique (no accidental sharing between
tests or with earlier runs) while its size is fixed by the arguments. The layout is what
``skopeo copy oci:DIR:TAG ...``, ``podman pull oci:DIR:TAG`` and ``umoci`` read::

    DIR/oci-layout                      {"imageLayoutVersion": "1.0.0"}
    DIR/index.json                      one descriptor per tag (annotation ref.name)
    DIR/blobs/sha256/<hex>              layers, configs, manifests, nested indexes

A multi-platform image is a nested image index: ``index.json`` points to an index blob whose
``manifests`` are one image manifest per platform (the shape buildah and umoci write).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

REF_NAME = "org.opencontainers.image.ref.name"

#: Small by default: two layers of a few hundred KiB.
DEFAULT_LAYER_SIZES = (256 * 1024, 512 * 1024)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer: ``digest`` of the compressed blob, ``diff_id`` of the tar."""

    digest: str
    diff_id: str
    size: int
    files: dict[str, bytes]


@dataclass(frozen=True)
class Image:
    """One single-platform image written into a layout."""

    manifest_digest: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    config_digest: str
    config: dict[str, Any]
    layers: tuple[Layer, ...]
    os: str
    architecture: str

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blob_digests(self) -> list[str]:
        """Config and layers: every blob the manifest references."""
        return [self.config_digest, *self.layer_digests]

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}"


@dataclass(frozen=True)
class MultiArchImage:
    """An image index of several platform images."""

    index_digest: str
    index: dict[str, Any]
    index_bytes: bytes
    images: tuple[Image, ...]

    def for_platform(self, platform: str) -> Image:
        for image in self.images:
            if image.platform == platform:
                return image
        raise KeyError(platform)


@dataclass
class OciLayout:
    """An OCI image layout directory that images can be added to."""

    path: Path
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def blobs(self) -> Path:
        return self.path / "blobs" / "sha256"

    def ref(self, tag: str) -> str:
        """The containers/image transport reference, e.g. for skopeo: ``oci:DIR:TAG``."""
        return f"oci:{self.path}:{tag}"

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.path / "blobs" / algorithm / hexdigest

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def write_blob(self, data: bytes) -> str:
        digest = sha256(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.rename(path)
        return digest

    def index_json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.path / "index.json").read_text())
        return loaded

    def tagged(self, tag: str) -> dict[str, Any]:
        """The descriptor index.json holds for ``tag``."""
        for descriptor in self.index_json().get("manifests", []):
            if descriptor.get("annotations", {}).get(REF_NAME) == tag:
                found: dict[str, Any] = descriptor
                return found
        raise KeyError(f"{tag} not in {self.path}/index.json")

    def _tag(self, tag: str, descriptor: dict[str, Any]) -> None:
        index = self.index_json()
        manifests = [
            d for d in index.get("manifests", []) if d.get("annotations", {}).get(REF_NAME) != tag
        ]
        manifests.append({**descriptor, "annotations": {REF_NAME: tag}})
        index["manifests"] = manifests
        (self.path / "index.json").write_text(json.dumps(index, indent=2))
        self.tags[tag] = descriptor["digest"]


def open_layout(path: Path) -> OciLayout:
    """Create (or reuse) an empty OCI layout at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    oci_layout = path / "oci-layout"
    if not oci_layout.exists():
        oci_layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = path / "index.json"
    if not index.exists():
        index.write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
    return OciLayout(path)


def make_layer(size: int, *, files: int = 2, prefix: str = "data") -> tuple[bytes, Layer]:
    """A gzip'd tar of ``files`` random files totalling ``size`` bytes (gzip of random data
    is about as large as the data). Returns the blob and its description."""
    contents: dict[str, bytes] = {}
    tag = os.urandom(6).hex()
    base, extra = divmod(size, files)
    for number in range(files):
        contents[f"{prefix}/{tag}-{number}.bin"] = os.urandom(base + (extra if number == 0 else 0))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(prefix)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        directory.mtime = 0
        tar.addfile(directory)
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    return blob, Layer(sha256(blob), sha256(tar_bytes), len(blob), contents)


def write_image(
    layout: OciLayout,
    tag: str | None = None,
    *,
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
    os_name: str = "linux",
    architecture: str = "amd64",
    compact: bool = False,
    label: str | None = None,
) -> Image:
    """Write one random image (config + gzip'd layers + manifest) into ``layout``.

    By default the manifest is pretty-printed JSON, so a client or registry that re-serializes
    it instead of keeping its bytes changes its digest. ``compact=True`` writes it the way Go's
    encoding/json does (containers/image, podman), so re-serializing keeps the digest.
    """
    layers: list[Layer] = []
    for number, size in enumerate(layer_sizes):
        blob, layer = make_layer(size, prefix=f"layer{number}")
        assert layout.write_blob(blob) == layer.digest
        layers.append(layer)
    config: dict[str, Any] = {
        "architecture": architecture,
        "os": os_name,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": {"moorage.test": label or os.urandom(8).hex()},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": f"moorage test layer {n}"}
            for n in range(len(layers))
        ],
    }
    config_bytes = canonical_json(config)
    config_digest = layout.write_blob(config_bytes)
    # Key order as in the Go structs (image-spec), so compact output matches encoding/json.
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    if compact:
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    else:
        manifest_bytes = json.dumps(manifest, indent=3).encode()
    manifest_digest = layout.write_blob(manifest_bytes)
    image = Image(
        manifest_digest=manifest_digest,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        config_digest=config_digest,
        config=config,
        layers=tuple(layers),
        os=os_name,
        architecture=architecture,
    )
    if tag is not None:
        layout._tag(
            tag,
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": architecture, "os": os_name},
            },
        )
    return image


def docker_v2s2_manifest(image: Image) -> dict[str, Any]:
    """The Docker schema 2 manifest of ``image``'s blobs, as ``skopeo copy --format v2s2``
    converts an OCI image: same config and layer blobs, Docker media types."""
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG,
            "size": image.manifest["config"]["size"],
            "digest": image.config_digest,
        },
        "layers": [
            {"mediaType": DOCKER_LAYER_GZIP, "size": layer.size, "digest": layer.digest}
            for layer in image.layers
        ],
    }


def write_multiarch(
    layout: OciLayout,
    tag: str,
    *,
    platforms: Sequence[tuple[str, str]] = (("linux", "amd64"), ("linux", "arm64")),
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
) -> MultiArchImage:
    """Write one image per platform and an image index of them, tagged ``tag``."""
    images = tuple(
        write_image(layout, layer_sizes=layer_sizes, os_name=os_name, architecture=arch)
        for os_name, arch in platforms
    )
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": len(image.manifest_bytes),
                "platform": {"architecture": image.architecture, "os": image.os},
            }
            for image in images
        ],
    }
    index_bytes = json.dumps(index, indent=3).encode()
    index_digest = layout.write_blob(index_bytes)
    layout._tag(tag, {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(index_bytes)})
    return MultiArchImage(index_digest, index, index_bytes, images)


def new_image(
    directory: Path,
    tag: str = "latest",
    *,
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
    compact: bool = False,
) -> tuple[OciLayout, Image]:
    """A fresh layout at ``directory`` holding one random linux/amd64 image tagged ``tag``."""
    layout = open_layout(directory)
    return layout, write_image(layout, tag, layer_sizes=layer_sizes, compact=compact)


def read_image(layout: OciLayout, manifest_digest: str) -> dict[str, Any]:
    """The manifest stored in ``layout`` under ``manifest_digest``."""
    loaded: dict[str, Any] = json.loads(layout.read_blob(manifest_digest))
    return loaded


def layout_blob_digests(layout: OciLayout) -> set[str]:
    """Every blob a layout holds, by digest, after checking each file's bytes match its name."""
    found: set[str] = set()
    for path in layout.blobs.iterdir():
        digest = f"sha256:{path.name}"
        actual = sha256(path.read_bytes())
        if actual != digest:
            raise AssertionError(f"{path} holds content with digest {actual}")
        found.add(digest)
    return found


def layer_files(blob: bytes) -> dict[str, bytes]:
    """The regular files in a (gzip'd or plain) tar layer, by path without a leading ./ or /."""
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                name = member.name.removeprefix("./").lstrip("/")
                files[name] = extracted.read()
    return files


def check_layout_image(layout: OciLayout, manifest_digest: str) -> dict[str, Any]:
    """Check that ``layout`` holds a complete image under ``manifest_digest`` (manifest, config
    and every layer, each with the bytes its digest names, sizes as declared); its manifest."""
    manifest = read_image(layout, manifest_digest)
    assert sha256(layout.read_blob(manifest_digest)) == manifest_digest
    for descriptor in [manifest["config"], *manifest["layers"]]:
        data = layout.read_blob(descriptor["digest"])
        assert sha256(data) == descriptor["digest"], f"{descriptor['digest']} is corrupt"
        assert len(data) == descriptor["size"], f"{descriptor['digest']} has the wrong size"
    return manifest


def write_oci_archive(layout: OciLayout, archive: Path) -> Path:
    """The layout as a tar (``oci-archive:``; what ``ctr images import`` reads)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout.path.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout.path)), recursive=False)
    return archive
