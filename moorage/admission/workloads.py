"""Where the containers of each kind of object live, and the images they name.

Pure functions over the JSON the API server sends. Pinning the *template* of a workload (not
only bare Pods) is what makes one rollout run one build on every node.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ContainerKind = Literal["initContainers", "containers", "ephemeralContainers"]
CONTAINER_KINDS: tuple[ContainerKind, ...] = ("initContainers", "containers", "ephemeralContainers")

#: kind -> path from the object to its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}


@dataclass(frozen=True, slots=True)
class ImageSite:
    """One container's image: where it is (a JSON pointer) and what it says."""

    pointer: str
    container_kind: ContainerKind
    container: str
    image: str


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def image_sites(
    kind: str, obj: Mapping[str, Any], only: tuple[ContainerKind, ...] = CONTAINER_KINDS
) -> Iterator[ImageSite]:
    """Every container image of ``obj`` in the lists ``only`` names, in document order.

    Containers with no ``image`` (invalid; the API server rejects them) are skipped.
    """
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return
    spec: Any = obj
    for key in path:
        if not isinstance(spec, Mapping):
            return
        spec = spec.get(key)
    if not isinstance(spec, Mapping):
        return
    prefix = "".join(f"/{_escape(key)}" for key in path)
    for list_name in only:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if not isinstance(container, Mapping):
                continue
            image = container.get("image")
            if isinstance(image, str) and image:
                yield ImageSite(
                    pointer=f"{prefix}/{list_name}/{index}/image",
                    container_kind=list_name,
                    container=str(container.get("name", "")),
                    image=image,
                )
