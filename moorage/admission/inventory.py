"""The cluster inventory: which images of this registry the objects of the cluster use now.

Garbage collection keeps every digest (and tag) listed here. The inventory is read through
the Kubernetes API with the webhooks' ServiceAccount (``KubeClient.list_objects``), in all
namespaces, a page at a time, from:

- Pods: their containers, init containers and ephemeral containers, and what their status
  says the node runs (``image`` and ``imageID`` of ``containerStatuses``,
  ``initContainerStatuses`` and ``ephemeralContainerStatuses``): a Pod that names a tag runs
  the digest in its ``imageID``;
- the templates Pods are made from: Deployments, ReplicaSets, StatefulSets, DaemonSets,
  ReplicationControllers, Jobs, CronJobs (``jobTemplate``) and PodTemplates;
- apps/v1 ControllerRevisions (``data.spec.template``): the older templates StatefulSets and
  DaemonSets keep to roll back to.

Templates are listed before what is made from them (CronJob, Job, Pod; Deployment,
ReplicaSet, Pod; StatefulSet, ControllerRevision, Pod), so an image on its way down during
the listing (a rollout making a ReplicaSet, then its Pods) is seen at one of its places; an
image that first appears during the listing was admitted then, and the webhook's pins cover
it.

Only images whose registry host is one of this registry's own names count (as for
``LocalResolver``): the repository is the reference's path. An image that does not parse is
skipped (logged at debug level), and so is a status ``imageID`` that is a bare image id
(``sha256:...``, which names no repository). The extraction (``images_of``) is pure.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from moorage.admission.workloads import image_sites
from moorage.digest import Digest
from moorage.errors import RegistryError
from moorage.model import RunningImage
from moorage.reference import ReferenceError, parse_reference

log = logging.getLogger("moorage.admission.inventory")

#: The lists of a Pod's status that say what runs, each entry with ``name``, ``image`` and
#: ``imageID``.
STATUS_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")

#: ``docker-pullable://``, ``docker://``, ``containerd://`` ... before a status's imageID.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class InventoryResource:
    """A resource the inventory lists, in all namespaces."""

    kind: str
    #: "" for the core group.
    group: str
    version: str
    #: The plural the API (and RBAC) names it by.
    resource: str

    @property
    def api_path(self) -> str:
        if not self.group:
            return f"/api/{self.version}/{self.resource}"
        return f"/apis/{self.group}/{self.version}/{self.resource}"


#: What the inventory lists, in this order: templates before what is made from them.
INVENTORY_RESOURCES: tuple[InventoryResource, ...] = (
    InventoryResource("CronJob", "batch", "v1", "cronjobs"),
    InventoryResource("Deployment", "apps", "v1", "deployments"),
    InventoryResource("StatefulSet", "apps", "v1", "statefulsets"),
    InventoryResource("DaemonSet", "apps", "v1", "daemonsets"),
    InventoryResource("ReplicationController", "", "v1", "replicationcontrollers"),
    InventoryResource("PodTemplate", "", "v1", "podtemplates"),
    InventoryResource("Job", "batch", "v1", "jobs"),
    InventoryResource("ReplicaSet", "apps", "v1", "replicasets"),
    InventoryResource("ControllerRevision", "apps", "v1", "controllerrevisions"),
    InventoryResource("Pod", "", "v1", "pods"),
)


class ObjectLister(Protocol):
    """What the inventory reads the cluster through (``KubeClient``)."""

    def list_objects(self, api_path: str, *, page_size: int = ...) -> AsyncIterator[dict[str, Any]]:
        """Every object of the list endpoint ``api_path``, ``page_size`` per request."""
        ...


async def list_running_images(
    client: ObjectLister,
    hosts: frozenset[str],
    *,
    page_size: int | None = None,
    resources: tuple[InventoryResource, ...] = INVENTORY_RESOURCES,
) -> list[RunningImage]:
    """The images of this registry (registry host in ``hosts``) that the cluster's objects
    use now, each record once, in the order listed. ``page_size``: objects per request
    (default: the client's).

    Raises ``KubernetesError`` (from the client) when a resource cannot be listed, a 403
    naming the RBAC rule that is missing; a resource the API server does not serve is
    skipped with a warning.
    """
    found: dict[RunningImage, None] = {}
    for resource in resources:
        if page_size is None:
            objects = client.list_objects(resource.api_path)
        else:
            objects = client.list_objects(resource.api_path, page_size=page_size)
        async for obj in objects:
            for record in images_of(resource.kind, obj, hosts):
                found.setdefault(record)
    return list(found)


def images_of(kind: str, obj: Mapping[str, Any], hosts: frozenset[str]) -> list[RunningImage]:
    """The images of this registry that one object of ``kind`` (as listed: the items of a list
    do not say their kind) uses, each record once, in document order (a Pod's status last)."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = _text(metadata.get("namespace")), _text(metadata.get("name"))
    found: dict[RunningImage, None] = {}
    for container, image, reference in _images(kind, obj):
        where = f"{kind} {namespace}/{name} container {container!r}"
        if reference is None:
            log.debug("%s: %r names no repository; skipped", where, image)
            continue
        try:
            parsed = parse_reference(reference)
        except ReferenceError as exc:
            log.debug("%s: %s; skipped", where, exc)
            continue
        if parsed.domain in hosts:
            record = RunningImage(
                namespace, kind, name, container, image, parsed.path, parsed.tag, parsed.digest
            )
            found.setdefault(record)
    return list(found)


def status_reference(value: str) -> str | None:
    """The image reference in a container status's ``image`` or ``imageID``: without a
    runtime's scheme (``docker-pullable://host/repo@sha256:...`` is ``host/repo@sha256:...``);
    None for a bare image id (``sha256:...``, ``docker://sha256:...``), which names no
    repository."""
    reference = _SCHEME.sub("", value, count=1)
    try:
        Digest.parse(reference)
    except RegistryError:
        return reference
    return None


def _images(kind: str, obj: Mapping[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(container, image as written, the reference it names: None for none)."""
    if kind == "ControllerRevision":
        # A StatefulSet's or DaemonSet's revision: ``data`` is a patch of its spec holding
        # the template (``{"spec": {"template": {...}}}``), shaped as the workload is.
        data = obj.get("data")
        sites = image_sites("StatefulSet", data) if isinstance(data, Mapping) else iter(())
    else:
        sites = image_sites(kind, obj)
    for site in sites:
        yield site.container, site.image, site.image
    if kind != "Pod":
        return
    status = obj.get("status")
    for list_name in STATUS_LISTS:
        entries = status.get(list_name) if isinstance(status, Mapping) else None
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, Mapping):
                continue
            for key in ("image", "imageID"):
                value = entry.get(key)
                if isinstance(value, str) and value:
                    yield _text(entry.get("name")), value, status_reference(value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


class InventoryRecord(Protocol):
    """Where an inventory goes (``registry.inventory.replace``)."""

    def __call__(self, images: Sequence[RunningImage], at: float) -> Awaitable[None]: ...


async def take_inventory(
    client: ObjectLister,
    hosts: frozenset[str],
    record: InventoryRecord,
    clock: Callable[[], float] = time.time,
) -> list[RunningImage]:
    """List what the cluster runs of this registry and record it, as of when the listing
    started (what was admitted after that was pinned, and pins are kept too)."""
    started = clock()
    images = await list_running_images(client, hosts)
    await record(images, started)
    return images


async def keep_inventory(
    client: ObjectLister,
    hosts: frozenset[str],
    record: InventoryRecord,
    interval: float,
    clock: Callable[[], float] = time.time,
) -> None:
    """Take the inventory every ``interval`` seconds, for ever. A failure is logged and the
    next round tries again; meanwhile the recorded inventory ages, and garbage collection
    stops once it is older than ``gc.inventory_max_age`` rather than guess what runs."""
    while True:
        try:
            images = await take_inventory(client, hosts, record, clock)
            log.info("cluster inventory: %d images of this registry in use", len(images))
        except Exception as exc:
            log.warning("cluster inventory failed (retried in %.0f s): %s", interval, exc)
        await asyncio.sleep(interval)
