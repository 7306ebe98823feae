"""Which images of an admission request to pin, and the JSONPatch that pins them.

Pure: resolving a tag to a digest happens elsewhere (``resolver``). Rules:

- CREATE and UPDATE of the kinds in ``workloads.POD_SPEC_PATHS`` are looked at; the
  ``pods/ephemeralcontainers`` subresource only for its ephemeral containers; any other
  subresource (``status``, ``scale``...) and every other operation is left alone.
- An image that already names a digest is never re-resolved, so a reinvocation of the
  webhook on its own output produces no patch.
- A pinned image keeps what the user wrote and gains ``@<digest>``: ``app:today`` becomes
  ``app:today@sha256:...``, which Kubernetes and every runtime pull by digest.
- An image written without a tag means ``latest``, and its pinned form says so: ``app``
  becomes ``app:latest@sha256:...``, not ``app@sha256:...``. The validating webhook runs on
  the pinned object and judges the tag it reads there (``refuse_latest``,
  ``refuse_mutable_tags``), so the implicit ``latest`` must stay visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moorage.admission.review import AdmissionRequest
from moorage.admission.workloads import CONTAINER_KINDS, ImageSite, image_sites
from moorage.reference import ImageReference, ReferenceError, parse_reference

OPERATIONS = frozenset({"CREATE", "UPDATE"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A container image to pin: its site and its parsed reference (None if unparseable)."""

    site: ImageSite
    reference: ImageReference | None
    error: str | None = None


def candidates(request: AdmissionRequest) -> list[Candidate]:
    """The images of the request that need a digest."""
    if request.operation not in OPERATIONS:
        return []
    if request.sub_resource == "ephemeralcontainers" and request.resource == "pods":
        only: tuple[Any, ...] = ("ephemeralContainers",)
    elif request.sub_resource:
        return []
    else:
        only = CONTAINER_KINDS
    found = []
    for site in image_sites(request.kind, request.object, only):
        try:
            reference = parse_reference(site.image)
        except ReferenceError as exc:
            found.append(Candidate(site, None, str(exc)))
            continue
        if not reference.pinned:
            found.append(Candidate(site, reference))
    return found


def written_tag(image: str) -> str | None:
    """The tag as written in ``image`` (``host:5000/app`` has none), or None."""
    name = image.partition("@")[0]
    colon = name.rfind(":")
    return name[colon + 1 :] if colon > name.rfind("/") else None


def pinned_image(image: str, digest: str, default_tag: str = "latest") -> str:
    """``image`` as written, with the tag it means spelled out, and ``@digest``."""
    if written_tag(image) is None:
        image = f"{image}:{default_tag}"
    return f"{image}@{digest}"


def patch(pins: Mapping[ImageSite, str]) -> list[dict[str, Any]]:
    """JSONPatch operations that set each site's image to its pinned form, and nothing else."""
    return [
        {"op": "replace", "path": site.pointer, "value": pinned_image(site.image, digest)}
        for site, digest in pins.items()
    ]
