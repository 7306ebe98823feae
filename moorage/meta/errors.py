"""What the metadata store raises; every backend raises the same exceptions for the same
conditions (``tests/meta`` holds them to it)."""

from __future__ import annotations

from collections.abc import Sequence

from moorage.errors import Unavailable
from moorage.model import Reference, Refusal


class MetadataError(Exception):
    pass


class MetadataUnavailable(MetadataError, Unavailable):
    """The metadata store cannot be reached or cannot serve now (a database server is down,
    refuses connections, or runs out of resources); the request may succeed later."""

    service = "the metadata store"


class MissingReferences(MetadataError):
    def __init__(self, missing: Sequence[Reference]) -> None:
        self.missing = tuple(missing)
        super().__init__(", ".join(f"{r.kind} {r.digest}" for r in self.missing))


class TagRefused(MetadataError):
    """A guard refused a tag change, or several tags of one push; each refusal is recorded in
    its tag's history. ``refusal`` is the first of ``refusals``."""

    def __init__(self, refusal: Refusal, *more: Refusal) -> None:
        self.refusal = refusal
        self.refusals = (refusal, *more)
        super().__init__("; ".join(r.message for r in self.refusals))


class PolicyChanged(MetadataError):
    """The stored tag policy is no longer the one a guard enforces; nothing was changed.
    Make a guard from the policy in force and try again."""

    def __init__(self, guarded: int, stored: int) -> None:
        self.stored = stored
        super().__init__(f"the tag policy is at version {stored}, not {guarded}")


class ManifestNotFound(MetadataError):
    pass


class UploadNotFound(MetadataError):
    pass


class UploadBusy(MetadataError):
    """Another request holds the upload's lease: ``owner`` holds it as ``lease_until``."""

    def __init__(self, upload_id: str, owner: str = "", lease_until: float = 0.0) -> None:
        super().__init__(upload_id)
        self.owner = owner
        self.lease_until = lease_until


class UploadOffsetMismatch(MetadataError):
    def __init__(self, offset: int) -> None:
        self.offset = offset
        super().__init__(f"upload is at offset {offset}")


class UploadLeaseLost(MetadataError):
    """The request no longer holds the upload's lease (it ran out, or another took it)."""


class BlobBeingDeleted(MetadataError):
    """Garbage collection is deleting the blob's bytes right now: it cannot be uploaded or
    recorded until that is done (a moment; the client may retry)."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} is being deleted by garbage collection")
        self.digest = digest
