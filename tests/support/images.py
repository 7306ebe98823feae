"""The tests' images and manifests, built in memory: one ``Image`` for every test.

An ``Image`` is one manifest's exact bytes with the content it references:

- an image manifest: a config and layers (``seeded_image``, ``random_image``, ``image_of``);
- an artifact: an image manifest with an ``artifactType`` and a ``subject`` (``artifact_of``,
  or ``image_of`` with those arguments);
- an index (or Docker manifest list) of other images, each of them in ``children``
  (``index_of``, ``multiarch_image`` for several platforms);
- a Docker schema 2 variant of any of these (``image.as_docker()``: the same blobs under
  Docker media types).

Two kinds of content:

- ``seeded_image``, ``config_blob`` and ``layer_blob`` make deterministic bytes from a seed,
  so ranges, sizes and digests mean something in HTTP API tests;
- ``random_image`` and ``tar_layer`` make real gzip'd tars of random files, unique on every
  run, for real clients (skopeo, podman, containerd unpack them) and for OCI image layouts.

Manifests are pretty-printed by default (three spaces, as Docker writes them), so a client
or registry that re-serializes a manifest instead of keeping its bytes changes its digest;
``compact=True`` writes them as Go's encoding/json does (containers/image, podman), so
re-serializing keeps the digest.

``OciLayout`` writes images into an OCI image layout (what ``skopeo copy oci:DIR:TAG``,
``podman pull oci:DIR:TAG`` and ``umoci`` read)::

    DIR/oci-layout                      {"imageLayoutVersion": "1.0.0"}
    DIR/index.json                      one descriptor per tag (annotation ref.name)
    DIR/blobs/sha256/<hex>              layers, configs, manifests, nested indexes

Pushing images is the transports' business: ``tests.support.app`` (the in-process app),
``tests.support.http`` (a running registry).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from moorage.model import ManifestRecord

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: The Docker media type of each OCI one, as ``skopeo copy --format v2s2`` converts them.
TO_DOCKER = {
    OCI_MANIFEST: DOCKER_MANIFEST,
    OCI_INDEX: DOCKER_MANIFEST_LIST,
    OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
}

#: The annotation an OCI layout's index.json names each tag with.
REF_NAME = "org.opencontainers.image.ref.name"

#: Small by default: two layers of a few hundred KiB.
DEFAULT_LAYER_SIZES = (256 * 1024, 512 * 1024)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def sha256(data: bytes) -> str:
    return digest_of(data, "sha256")


def dumps(document: Mapping[str, Any], *, compact: bool = False) -> bytes:
    """A JSON document's bytes, keys in the order given: pretty-printed with three spaces (as
    Docker writes manifests), or ``compact`` as Go's encoding/json writes them."""
    if compact:
        return json.dumps(document, separators=(",", ":")).encode()
    return json.dumps(document, indent=3).encode()


# -- blobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """Some bytes with the media type a manifest's descriptor gives them."""

    data: bytes
    media_type: str = OCI_LAYER_GZIP
    algorithm: str = "sha256"
    #: For a tar layer: the digest of the uncompressed tar (the config's ``rootfs.diff_ids``).
    diff_id: str | None = None

    @cached_property
    def digest(self) -> str:
        return digest_of(self.data, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    def json(self) -> Any:
        return json.loads(self.data)


def config_blob(
    seed: str,
    media_type: str = OCI_CONFIG,
    algorithm: str = "sha256",
    *,
    architecture: str = "amd64",
    os_name: str = "linux",
) -> Blob:
    """A small image config, distinct for each seed."""
    body = {"architecture": architecture, "os": os_name, "seed": seed, "rootfs": {"type": "layers"}}
    return Blob(json.dumps(body, sort_keys=True).encode(), media_type, algorithm)


def layer_blob(
    seed: str, size: int = 1024, media_type: str = OCI_LAYER_GZIP, algorithm: str = "sha256"
) -> Blob:
    """``size`` deterministic pseudo-random bytes (so ranges and digests are meaningful)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return Blob(bytes(out[:size]), media_type, algorithm)


#: The empty config artifacts use (``{}``).
EMPTY_CONFIG = Blob(b"{}", OCI_EMPTY)


def tar_layer(size: int, *, files: int = 2, prefix: str = "data") -> Blob:
    """A gzip'd tar of ``files`` random files under ``prefix/`` totalling ``size`` bytes (gzip
    of random data is about as large as the data), with its ``diff_id``."""
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
    return Blob(blob, OCI_LAYER_GZIP, diff_id=sha256(tar_bytes))


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


# -- manifest documents --------------------------------------------------------------------------


def manifest_descriptor(
    payload: bytes, media_type: str = OCI_MANIFEST, algorithm: str = "sha256", **extra: Any
) -> dict[str, Any]:
    """The descriptor of a manifest's bytes (which need not be an ``Image``'s)."""
    return {
        "mediaType": media_type,
        "digest": digest_of(payload, algorithm),
        "size": len(payload),
        **extra,
    }


def platform(architecture: str, os_name: str = "linux") -> dict[str, str]:
    return {"architecture": architecture, "os": os_name}


def _subject(subject: Image | Mapping[str, Any]) -> dict[str, Any]:
    return subject.descriptor() if isinstance(subject, Image) else dict(subject)


def oci_manifest(
    config: Blob,
    layers: Iterable[Blob] = (),
    *,
    artifact_type: str | None = None,
    subject: Image | Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    with_media_type: bool = True,
    compact: bool = False,
) -> bytes:
    """An OCI image manifest's bytes (fields in the image-spec's order)."""
    body: dict[str, Any] = {"schemaVersion": 2}
    if with_media_type:
        body["mediaType"] = OCI_MANIFEST
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    body["config"] = config.descriptor()
    body["layers"] = [layer.descriptor() for layer in layers]
    if subject is not None:
        body["subject"] = _subject(subject)
    if annotations is not None:
        body["annotations"] = dict(annotations)
    return dumps(body, compact=compact)


def docker_manifest(config: Blob, layers: Iterable[Blob] = (), *, compact: bool = False) -> bytes:
    """A Docker schema 2 manifest's bytes."""
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        },
        compact=compact,
    )


def oci_index(
    manifests: Iterable[Mapping[str, Any]],
    *,
    artifact_type: str | None = None,
    subject: Image | Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    compact: bool = False,
) -> bytes:
    """An OCI image index's bytes, of these descriptors."""
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX}
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    body["manifests"] = [dict(m) for m in manifests]
    if subject is not None:
        body["subject"] = _subject(subject)
    if annotations is not None:
        body["annotations"] = dict(annotations)
    return dumps(body, compact=compact)


def docker_manifest_list(manifests: Iterable[Mapping[str, Any]], *, compact: bool = False) -> bytes:
    """A Docker manifest list's bytes, of these descriptors."""
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [dict(m) for m in manifests],
        },
        compact=compact,
    )


# -- images --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """A manifest's exact bytes and everything it references: an image manifest's (or
    artifact's) ``config`` and ``layers``, or an index's ``children``."""

    manifest: bytes
    media_type: str = OCI_MANIFEST
    #: An image manifest's config; None for an index (``config`` is it, checked).
    config_or_none: Blob | None = None
    layers: tuple[Blob, ...] = ()
    children: tuple[Image, ...] = ()
    algorithm: str = "sha256"

    @cached_property
    def digest(self) -> str:
        return digest_of(self.manifest, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.manifest)

    @property
    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.manifest)
        return loaded

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    # -- an image manifest's content

    @property
    def config(self) -> Blob:
        assert self.config_or_none is not None, f"{self.media_type} {self.digest} has no config"
        return self.config_or_none

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """The config and the layers: every blob this manifest references itself."""
        config = self.config_or_none
        return (config, *self.layers) if config is not None else self.layers

    @property
    def config_digest(self) -> str:
        return self.config.digest

    @property
    def config_json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = self.config.json()
        return loaded

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blob_digests(self) -> list[str]:
        """Config and layers: every blob the manifest references."""
        return [blob.digest for blob in self.blobs]

    @property
    def platform(self) -> str | None:
        """``os/architecture`` as the config says, if it says."""
        if self.config_or_none is None or self.config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            return None
        config = self.config_json
        if "os" not in config or "architecture" not in config:
            return None
        return f"{config['os']}/{config['architecture']}"

    def platform_descriptor(self) -> dict[str, str] | None:
        """The ``platform`` an index's descriptor of this image carries."""
        if self.platform is None:
            return None
        os_name, architecture = self.platform.split("/", 1)
        return platform(architecture, os_name)

    # -- an index's content

    def for_platform(self, wanted: str) -> Image:
        for child in self.children:
            if child.platform == wanted:
                return child
        raise KeyError(f"no {wanted} image in {self.digest}")

    def walk(self) -> Iterator[Image]:
        """Every manifest from the leaves up: each child before the index listing it (the
        order a registry accepts them in), this one last."""
        for child in self.children:
            yield from child.walk()
        yield self

    @property
    def all_blobs(self) -> tuple[Blob, ...]:
        """Every blob of this image and of its children, once each."""
        seen: dict[str, Blob] = {}
        for image in self.walk():
            for blob in image.blobs:
                seen.setdefault(blob.digest, blob)
        return tuple(seen.values())

    # -- variants

    def as_docker(self) -> Image:
        """The Docker schema 2 variant: the same config and layer bytes (children converted
        too), Docker media types, no OCI-only fields; as ``skopeo copy --format v2s2``
        converts an image."""
        if self.is_index:
            children = tuple(child.as_docker() for child in self.children)
            return index_of(children, media_type=DOCKER_MANIFEST_LIST)
        config = replace(self.config, media_type=TO_DOCKER[self.config.media_type])
        layers = tuple(
            replace(layer, media_type=TO_DOCKER.get(layer.media_type, layer.media_type))
            for layer in self.layers
        )
        return Image(docker_manifest(config, layers), DOCKER_MANIFEST, config, layers)


def image_of(
    config: Blob,
    layers: Sequence[Blob] = (),
    *,
    artifact_type: str | None = None,
    subject: Image | Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    with_media_type: bool = True,
    compact: bool = False,
) -> Image:
    """The OCI image manifest of ``config`` and ``layers`` (an artifact, given an
    ``artifact_type`` or a ``subject``)."""
    manifest = oci_manifest(
        config,
        layers,
        artifact_type=artifact_type,
        subject=subject,
        annotations=annotations,
        with_media_type=with_media_type,
        compact=compact,
    )
    return Image(manifest, OCI_MANIFEST, config, tuple(layers))


def seeded_image(seed: str, *, layers: int = 2, architecture: str = "amd64") -> Image:
    """A small image made from ``seed`` alone: a config and ``layers`` layers of
    pseudo-random bytes (3000, 3517, ... bytes), the seed in the manifest's annotations."""
    config = config_blob(seed, architecture=architecture)
    blobs = [layer_blob(f"{seed}-{i}", 3000 + 517 * i) for i in range(layers)]
    return image_of(config, blobs, annotations={"seed": seed})


def random_image(
    *,
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
    os_name: str = "linux",
    architecture: str = "amd64",
    compact: bool = False,
    label: str | None = None,
) -> Image:
    """A runnable-looking image of random content: gzip'd tar layers of these sizes, a config
    with their diff_ids, a history and a random ``moorage.test`` label (or ``label``)."""
    layers = tuple(tar_layer(size, prefix=f"layer{n}") for n, size in enumerate(layer_sizes))
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
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    return image_of(Blob(config_bytes, OCI_CONFIG), layers, compact=compact)


def index_of(
    children: Sequence[Image],
    *,
    media_type: str = OCI_INDEX,
    artifact_type: str | None = None,
    subject: Image | Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    compact: bool = False,
) -> Image:
    """An index (``OCI_INDEX``) or Docker manifest list (``DOCKER_MANIFEST_LIST``) of
    ``children``; each descriptor carries its image's platform, if it has one."""
    descriptors = []
    for child in children:
        found = child.platform_descriptor()
        descriptors.append(child.descriptor(platform=found) if found else child.descriptor())
    if media_type == DOCKER_MANIFEST_LIST:
        assert artifact_type is None and subject is None and annotations is None
        manifest = docker_manifest_list(descriptors, compact=compact)
    else:
        manifest = oci_index(
            descriptors,
            artifact_type=artifact_type,
            subject=subject,
            annotations=annotations,
            compact=compact,
        )
    return Image(manifest, media_type, children=tuple(children))


def multiarch_image(
    *,
    platforms: Sequence[tuple[str, str]] = (("linux", "amd64"), ("linux", "arm64")),
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
) -> Image:
    """An OCI index of one ``random_image`` per (os, architecture)."""
    return index_of(
        [
            random_image(layer_sizes=layer_sizes, os_name=os_name, architecture=architecture)
            for os_name, architecture in platforms
        ]
    )


def artifact_of(
    subject: Image | Mapping[str, Any],
    artifact_type: str | None,
    payload: bytes | Blob,
    *,
    config: Blob = EMPTY_CONFIG,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """An artifact about ``subject`` (an image, or the descriptor of one not pushed): the
    empty config (or ``config``) and one layer, ``payload`` (bytes: application/octet-stream)."""
    layer = payload if isinstance(payload, Blob) else Blob(payload, "application/octet-stream")
    return image_of(
        config, [layer], artifact_type=artifact_type, subject=subject, annotations=annotations
    )


def manifest_record(seed: str) -> ManifestRecord:
    """The metadata store's record of a small image's manifest, distinct for each seed, for
    tests of the store's users: without references, so no blob need be stored first."""
    image = image_of(config_blob(seed))
    return ManifestRecord(image.digest, image.media_type, image.manifest)


# -- OCI image layouts ---------------------------------------------------------------------------


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

    def read_manifest(self, digest: str) -> dict[str, Any]:
        """The manifest stored under ``digest``, parsed."""
        loaded: dict[str, Any] = json.loads(self.read_blob(digest))
        return loaded

    def write_blob(self, data: bytes) -> str:
        digest = sha256(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.rename(path)
        return digest

    def add(self, image: Image, tag: str | None = None) -> Image:
        """Write ``image`` (its blobs, its children, its manifest) into the layout and, given
        a ``tag``, name it in index.json (with its platform, for a platform's image)."""
        for part in image.walk():
            for blob in part.blobs:
                assert self.write_blob(blob.data) == blob.digest
            assert self.write_blob(part.manifest) == part.digest
        if tag is not None:
            found = image.platform_descriptor()
            self._tag(tag, image.descriptor(platform=found) if found else image.descriptor())
        return image

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


def new_image(
    directory: Path,
    tag: str = "latest",
    *,
    layer_sizes: Sequence[int] = DEFAULT_LAYER_SIZES,
    compact: bool = False,
) -> tuple[OciLayout, Image]:
    """A fresh layout at ``directory`` holding one ``random_image`` (linux/amd64) as ``tag``."""
    layout = open_layout(directory)
    return layout, layout.add(random_image(layer_sizes=layer_sizes, compact=compact), tag)


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


def check_layout_image(layout: OciLayout, manifest_digest: str) -> dict[str, Any]:
    """Check that ``layout`` holds a complete image under ``manifest_digest`` (manifest, config
    and every layer, each with the bytes its digest names, sizes as declared); its manifest."""
    manifest = layout.read_manifest(manifest_digest)
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
