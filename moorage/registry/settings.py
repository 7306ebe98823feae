"""The registry services' settings: ``[uploads]``, ``[manifests]``, ``[delete]``, ``[mount]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from moorage.documents import Invalid, positive

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
