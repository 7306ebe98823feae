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


def pod_spec(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a supported kind of object, or None."""
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return None
    spec: Any = obj
    for key in path:
        if not isinstance(spec, Mapping):
            return None
        spec = spec.get(key)
    return spec if isinstance(spec, Mapping) else None


def pull_secret_names(spec: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Names in the pod spec's ``imagePullSecrets``."""
    secrets = spec.get("imagePullSecrets") if spec is not None else None
    if not isinstance(secrets, list):
        return ()
    return tuple(
        s["name"] for s in secrets if isinstance(s, Mapping) and isinstance(s.get("name"), str)
    )


def image_sites(
    kind: str, obj: Mapping[str, Any], only: tuple[ContainerKind, ...] = CONTAINER_KINDS
) -> Iterator[ImageSite]:
    """Every container image of ``obj`` in the lists ``only`` names, in document order.

    Containers with no ``image`` (invalid; the API server rejects them) are skipped.
    """
    spec = pod_spec(kind, obj)
    if spec is None:
        return
    path = POD_SPEC_PATHS[kind]
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
