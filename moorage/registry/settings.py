"""The registry services' settings: ``[uploads]``, ``[manifests]``, ``[delete]``, ``[mount]``,
``[gc]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from moorage.documents import Invalid, at_least, positive
from moorage.policy import unique_names
from moorage.registry.retention import RetentionRuleDocument

#: The smallest interval between upload checkpoints, in bytes.
MIN_CHECKPOINT = 64 * 1024


def _checkpoint(value: int) -> None:
    if value != 0 and value < MIN_CHECKPOINT:
        raise Invalid(f"must be 0 (none) or at least {MIN_CHECKPOINT} bytes, not {value}")


@dataclass(frozen=True)
class UploadSettings:
    #: Seconds an idle upload session lives.
    ttl: float = 24 * 3600.0
    #: Seconds an upload stays locked to a request writing to it; renewed every third of that
    #: while it writes. A lease whose process died on this host is taken over at once; one
    #: held by a replica that died elsewhere, once it runs out.
    lease: Annotated[float, positive] = 30.0
    #: Bytes of an upload between durable checkpoints while a request streams into it (0:
    #: none, else at least 64 KiB): where the upload resumes if the request never finishes.
    checkpoint: Annotated[int, _checkpoint] = 64 * 1024 * 1024


@dataclass(frozen=True)
class ManifestSettings:
    #: Largest manifest accepted, in bytes.
    max_size: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class DeleteSettings:
    #: Allow DELETE of manifests, tags and blobs.
    enabled: bool = True


@dataclass(frozen=True)
class MountSettings:
    #: Mount a blob the registry already holds when a client asks without ``from``.
    automatic: bool = True


@dataclass(frozen=True)
class CollectionSettings:
    """``[gc]``: garbage collection (``moorage gc``, and ``serve`` on a schedule)."""

    #: Seconds: manifests pushed, blobs linked and bytes stored this recently are kept (a
    #: push under way uploads layers before its manifest), and bytes are deleted this long
    #: after the last record of them (downloads under way finish).
    grace: Annotated[float, at_least(0)] = 3600.0
    #: Seconds an untagged manifest is kept after it was last tagged (or pushed).
    untagged_after: Annotated[float, at_least(0)] = 7 * 86400.0
    #: Keep untagged manifests for ever (as CNCF Distribution does); their blobs too.
    keep_untagged: bool = False
    #: Seconds a digest the admission webhook pinned is kept after the pin.
    pins_window: Annotated[float, at_least(0)] = 30 * 86400.0
    #: Seconds a digest a tag pointed at is kept after the tag moved away or was deleted, so
    #: that ``moorage tags restore`` can point it back.
    history_window: Annotated[float, at_least(0)] = 7 * 86400.0
    #: Seconds between collections by ``moorage serve`` (0: only ``moorage gc``).
    interval: Annotated[float, at_least(0)] = 0.0
    #: Seconds the cluster inventory (what runs) may be old: an older one stops a collection
    #: (the webhooks, which take it, may be down), unless no inventory was ever taken. 0: no
    #: limit.
    inventory_max_age: Annotated[float, at_least(0)] = 1800.0
    #: Retention rules (``[[gc.retention]]``, see ``moorage.registry.retention``): which tags
    #: a collection removes, and how long untagged manifests stay, by repository.
    retention: tuple[RetentionRuleDocument, ...] = ()

    def verify(self) -> None:
        unique_names(self.retention, "retention")
