"""The garbage collection benchmark's images: each a config and ``layers`` layers of
``layer_kib`` KiB of random bytes, all of them unique to the image (so that deleting the
image's manifest makes exactly its blobs garbage), tagged in one of ``REPOSITORIES``
repositories. An image is defined by its index alone (``make_image``: the bytes come from a
random generator seeded with the index), so both registries get the same content, and the
bytes are made again when pushed rather than kept in memory. ``Population`` is the images
pushed before the measurements and which quarter of them is deleted."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import cached_property

from registry_http import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

#: Repositories the images are spread over, round robin.
REPOSITORIES = 50
#: One image in this many is deleted after the population is pushed.
DELETED_EVERY = 4


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Image:
    """Image ``index``: its repository, tag, blobs (config first), manifest and its digest.
    ``layer_kib`` and ``layers`` make its content again (``contents``)."""

    index: int
    layers: int
    layer_kib: int
    tag: str

    @property
    def repository(self) -> str:
        return f"gc/repo{self.index % REPOSITORIES:02d}"

    def contents(self) -> list[bytes]:
        """The bytes of the config and of each layer."""
        rng = random.Random(f"moorage-gc-benchmark-{self.index}")
        layers = [rng.randbytes(self.layer_kib * 1024) for _ in range(self.layers)]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"benchmark.image": str(self.index)}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
        }
        return [json.dumps(config, separators=(",", ":")).encode(), *layers]

    @cached_property
    def _made(self) -> tuple[tuple[Blob, ...], bytes]:
        contents = self.contents()
        blobs = tuple(Blob(sha256(data), len(data)) for data in contents)
        config, *layers = blobs
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
            "annotations": {"org.opencontainers.image.title": f"gc benchmark {self.index}"},
        }
        return blobs, json.dumps(document, separators=(",", ":")).encode()

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return self._made[0]

    @property
    def manifest(self) -> bytes:
        return self._made[1]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blob_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs)


def make_image(index: int, layers: int, layer_kib: int, tag: str | None = None) -> Image:
    return Image(index, layers, layer_kib, tag or f"img{index}")


@dataclass(frozen=True)
class Population:
    """The images pushed before any measurement; every ``DELETED_EVERY``-th is deleted."""

    images: tuple[Image, ...]

    @property
    def deleted(self) -> list[Image]:
        return [image for image in self.images if image.index % DELETED_EVERY == DELETED_EVERY - 1]

    @property
    def kept(self) -> list[Image]:
        return [image for image in self.images if image.index % DELETED_EVERY != DELETED_EVERY - 1]

    @property
    def garbage(self) -> list[Blob]:
        """The blobs the deletions leave unreferenced (each image's blobs are its own)."""
        return [blob for image in self.deleted for blob in image.blobs]


def make_population(images: int, layers: int, layer_kib: int) -> Population:
    population = Population(tuple(make_image(i, layers, layer_kib) for i in range(images)))
    seen: set[str] = set()
    for image in population.images:  # makes every image's content once, and checks it
        for blob in image.blobs:
            if blob.digest in seen:
                raise AssertionError(f"image {image.index} shares blob {blob.digest}")
            seen.add(blob.digest)
    return population
