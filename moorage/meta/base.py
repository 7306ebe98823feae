"""The metadata protocol and the records it stores.

A backend keeps every fact about the registry except blob bytes: which blobs each repository
holds, manifests (their bytes included) and what they reference, tags, and upload sessions.
Every method that changes more than one row is one transaction; ``tests/meta`` runs the same
suite against every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

ReferenceKind = Literal["blob", "manifest"]
TagAction = Literal["created", "moved", "deleted", "restored", "refused"]


@dataclass(frozen=True, slots=True)
class Reference:
    """Something a manifest needs in its repository: a blob (config, layer) or a child manifest."""

    kind: ReferenceKind
    digest: str


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    payload: bytes
    artifact_type: str | None = None
    subject: str | None = None
    #: JSON text of the manifest's annotations (kept for the referrers API), or None.
    annotations: str | None = None
    references: tuple[Reference, ...] = ()

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class ReferrerRecord:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: str | None


@dataclass(slots=True)
class Upload:
    id: str
    repository: str
    offset: int
    hash_state: bytes | None
    created_at: float
    updated_at: float
    #: The lease: until when a request holds the upload (0: nobody). Also the fencing token.
    lease_until: float = 0.0
    #: Which process holds the lease (``moorage.process_identity``), or "".
    lease_owner: str = ""


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a manifest push changed: for each of its tags, in the order given, the digest the
    tag pointed at before (None: the push created it)."""

    previous: dict[str, str | None] = field(default_factory=dict)

    @property
    def previous_digest(self) -> str | None:
        """Where the push's first tag pointed before (None: new, or no tag)."""
        return next(iter(self.previous.values()), None)


def push_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """The distinct tags of a push, in the order given. A bare string is one tag (a ``str``
    is a sequence of strings too, and must never become one tag per character)."""
    if isinstance(tags, str):
        return (tags,)
    return tuple(dict.fromkeys(tags))


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change, recorded with it."""

    #: The authenticated user, or None for an anonymous request.
    user: str | None
    #: The client's address (or the origin of a change not made over HTTP, e.g. "config").
    address: str
    request_id: str


#: Who a change is recorded as made by when the registry makes it of its own accord.
REGISTRY_ACTOR = Actor(None, "registry", "")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a tag change was refused (an immutable tag)."""

    repository: str
    tag: str
    current_digest: str
    #: The digest the change wanted the tag at; None for a deletion.
    attempted_digest: str | None
    rule: str | None
    message: str


@dataclass(frozen=True, slots=True)
class TagGuard:
    """Decides, inside the transaction that changes a tag, whether the change may happen:
    ``guard(tag, current_digest, new_digest)``; ``new_digest`` is None for a deletion.

    ``policy_version`` is the version of the stored tag policy that ``decide`` enforces. The
    store reads the version in force in the same transaction, before it asks the guard, and
    raises ``PolicyChanged`` if it differs: no change is judged by a policy that was replaced
    while the request was in flight. None ties the guard to no stored policy.
    """

    decide: Callable[[str, str | None, str | None], Refusal | None]
    policy_version: int | None = None

    def __call__(self, tag: str, current: str | None, new: str | None) -> Refusal | None:
        return self.decide(tag, current, new)


@dataclass(frozen=True, slots=True)
class TagEvent:
    id: int
    repository: str
    tag: str
    action: TagAction
    old_digest: str | None
    new_digest: str | None
    at: float
    user: str | None
    address: str
    request_id: str
    #: For refusals: the rule that froze the tag (None when the default did) and the message.
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    document: str
    version: int
    source: str
    #: Hash of the configuration file's policy last installed (kept across API changes).
    source_hash: str | None
    updated_at: float
    user: str | None
    address: str


@dataclass(frozen=True, slots=True)
class PolicyChange:
    id: int
    at: float
    user: str | None
    address: str
    request_id: str
    source: str
    old_document: str | None
    new_document: str


@dataclass(frozen=True, slots=True)
class PinRecord:
    """An image the admission webhook pinned: in which object, to which digest, when."""

    at: float
    namespace: str
    kind: str
    #: The object's name, or its generateName followed by "*" before it has one.
    name: str
    container_kind: str
    container: str
    #: The image as the workload wrote it, and its normalised repository and tag.
    image: str
    repository: str
    tag: str
    digest: str
    #: How the digest was found: "local", "remote" or "cache".
    source: str
    request_uid: str
    user: str
    id: int = 0


class MetadataError(Exception):
    pass


class MetadataUnavailable(MetadataError):
    """The metadata store cannot be reached or cannot serve now (a database server is down,
    refuses connections, or runs out of resources); the request may succeed later."""


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


class MetadataStore(Protocol):
    async def connect(self) -> None:
        """Fail now, with the reason, if the store cannot be used (a server unreachable, a
        schema at another version) rather than on the first request."""

    async def close(self) -> None: ...

    # -- blobs --------------------------------------------------------------------------------
    async def add_blob(self, repository: str, digest: str, size: int) -> None:
        """Record a stored blob and link it into ``repository``."""

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob linked into ``repository``, or None."""

    async def find_blob(self, digest: str) -> int | None:
        """Size of a blob stored for any repository, or None."""

    async def mount_blob(self, repository: str, digest: str, source: str | None) -> int | None:
        """Link a blob held by ``source`` (or by any repository if None); its size or None."""

    async def unlink_blob(
        self,
        repository: str,
        digest: str,
        actor: Actor = REGISTRY_ACTOR,
        guard: TagGuard | None = None,
    ) -> bool:
        """Unlink a blob from ``repository``; False if it was not linked.

        The guard is asked for every tag that points at a manifest using the blob, or at an
        index listing such a manifest; one refusal refuses the unlink (TagRefused), and is
        recorded in that tag's history as made by ``actor``.
        """

    # -- manifests and tags -------------------------------------------------------------------
    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        tags: Sequence[str],
        actor: Actor,
        guard: TagGuard | None = None,
    ) -> PutResult:
        """Store a manifest and point each of ``tags`` at it, recording every change, in one
        transaction. ``tags`` may be empty (a push by digest); a tag named twice counts once,
        and a bare string is one tag (``push_tags``).

        All or nothing: raises MissingReferences, changing nothing, if a referenced blob or
        child manifest is not in the repository; TagRefused if ``guard`` refuses any of the
        tags, storing nothing but one refusal in the history of each refused tag (the guard
        is asked about every tag, so the error names all of them).
        """

    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None: ...

    async def resolve_tag(self, repository: str, tag: str) -> ManifestRecord | None: ...

    async def delete_manifest(
        self, repository: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        """Delete a manifest and the tags that point at it, recording their deletion.

        The guard is asked for every tag that points at the manifest, or at an index that
        lists it; one refusal refuses the whole deletion (TagRefused).
        """

    async def delete_tag(
        self, repository: str, tag: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        """Delete a tag, recording it; TagRefused if the guard refuses."""

    async def restore_tag(
        self, repository: str, tag: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> str | None:
        """Point an existing or deleted tag at a manifest of the repository again.

        Returns the digest it pointed at before; ManifestNotFound if the repository has no
        such manifest; TagRefused if the guard refuses.
        """

    # -- tag history --------------------------------------------------------------------------
    async def tag_history(
        self, repository: str, tag: str, limit: int | None, before: int | None
    ) -> list[TagEvent]:
        """The tag's events, newest first, with ids below ``before`` if given."""

    async def tag_at(self, repository: str, tag: str, before: float) -> TagEvent | None:
        """The last change (not a refusal) to the tag strictly before ``before``."""

    async def digest_events(self, digest: str) -> list[TagEvent]:
        """Every change that pointed a tag at ``digest`` or away from it, oldest first."""

    # -- tag policy ---------------------------------------------------------------------------
    async def policy_version(self) -> int:
        """The version of the policy in force (0 when none was ever set)."""

    async def get_policy(self) -> PolicyRecord | None: ...

    async def set_policy(
        self, document: str, actor: Actor, source: str, source_hash: str | None
    ) -> int:
        """Replace the policy, recording the change; the new version."""

    async def policy_changes(self, limit: int | None) -> list[PolicyChange]:
        """Changes to the policy, newest first."""

    async def repository_exists(self, repository: str) -> bool: ...

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        """Tags in lexical order after ``last``."""

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]: ...

    async def referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[ReferrerRecord]: ...

    # -- admission pins ------------------------------------------------------------------------
    async def record_pins(self, pins: Sequence[PinRecord]) -> None: ...

    async def list_pins(
        self,
        namespace: str | None,
        repository: str | None,
        tag: str | None,
        limit: int | None,
        before: int | None,
    ) -> list[PinRecord]:
        """Pins matching the filters that are given, newest first, with ids below ``before``."""

    # -- uploads ------------------------------------------------------------------------------
    async def create_upload(self, upload: Upload) -> None: ...

    async def get_upload(self, upload_id: str, repository: str) -> Upload | None: ...

    async def acquire_upload(
        self,
        upload_id: str,
        repository: str,
        offset: int | None,
        now: float,
        lease: float,
        owner: str = "",
        take_over: float | None = None,
    ) -> Upload:
        """Take the upload's lease until ``now + lease``, for ``owner``.

        The lease is free once it has run out. With ``take_over``, it is also taken from a
        holder whose lease value is exactly ``take_over`` (one known to be dead): a
        compare-and-set, so of several requests taking over one dead holder, one wins.

        Raises UploadNotFound, UploadBusy (with the holder), or UploadOffsetMismatch if
        ``offset`` is given and differs from the upload's offset.
        """

    async def renew_upload(
        self, upload_id: str, lease_until: float, new_lease_until: float
    ) -> bool:
        """Extend a lease still held as ``lease_until``; False if it was lost meanwhile."""

    async def checkpoint_upload(
        self,
        upload_id: str,
        lease_until: float,
        offset: int,
        hash_state: bytes | None,
        now: float,
    ) -> bool:
        """Record progress made durable while the request still holds the lease as
        ``lease_until``, and keep holding it; False if the lease was lost (nothing changes).

        ``offset`` is where a later request resumes if this one never finishes (its process
        dies), and ``hash_state`` the hash of exactly the bytes before it.
        """

    async def release_upload(
        self,
        upload_id: str,
        lease_until: float,
        offset: int,
        hash_state: bytes | None,
        now: float,
    ) -> bool:
        """Record progress and drop the lease, if it is still held as ``lease_until``.

        The lease value is the fencing token: a request whose lease ran out and was taken
        over cannot overwrite the new holder's progress.
        """

    async def delete_upload(self, upload_id: str) -> None: ...

    async def expired_uploads(self, updated_before: float) -> list[Upload]: ...
