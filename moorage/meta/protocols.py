"""The metadata store, one protocol per concern (its records live in ``moorage.model``, its
errors in ``moorage.meta.errors``).

A backend keeps every fact about the registry except blob bytes: which blobs each repository
holds (``BlobStore``), manifests (their bytes included), what they reference, tags and their
history (``ManifestStore``), the tag policy in force (``PolicyStore``), the images the admission
webhook pinned (``PinStore``), upload sessions (``UploadStore``), what garbage collection
reads and deletes (``CollectionStore``), the images the cluster uses (``InventoryStore``)
and usage per repository (``UsageStore``).
``MetadataStore`` is all of them, plus opening and closing; code that needs one concern types
its dependency with that concern's protocol.

Every method that changes more than one row is one transaction. The guarded tag changes
(``put_manifest``, ``delete_manifest``, ``delete_tag``, ``restore_tag``, ``unlink_blob``)
follow the rules of ``moorage.meta.tag_changes``, whatever the backend. ``tests/meta`` runs
one suite per protocol against every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from moorage.model import (
    REGISTRY_ACTOR,
    Actor,
    BlobDeletion,
    ManifestPulls,
    ManifestRecord,
    PinRecord,
    PolicyChange,
    PolicyRecord,
    PutResult,
    ReferrerRecord,
    RepositoryContents,
    RepositorySweep,
    RepositoryUsage,
    RunningImage,
    TagEvent,
    TagGuard,
    Upload,
    UsageCount,
)


class BlobStore(Protocol):
    """Blobs stored once, linked into the repositories that hold them."""

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


class ManifestStore(Protocol):
    """Manifests (bytes included) and their references, tags, and the history of every tag."""

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
        is asked about every tag, so the error names all of them). A push without tags
        judges nothing, so its guard's policy version is not checked.
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

    async def repository_exists(self, repository: str) -> bool: ...

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        """Tags in lexical order after ``last``."""

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]: ...

    async def referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[ReferrerRecord]: ...

    async def tag_history(
        self, repository: str, tag: str, limit: int | None, before: int | None
    ) -> list[TagEvent]:
        """The tag's events, newest first, with ids below ``before`` if given."""

    async def tag_at(self, repository: str, tag: str, before: float) -> TagEvent | None:
        """The last change (not a refusal) to the tag strictly before ``before``."""

    async def digest_events(self, digest: str) -> list[TagEvent]:
        """Every change that pointed a tag at ``digest`` or away from it, oldest first."""


class PolicyStore(Protocol):
    """The tag policy in force, versioned, and the record of its changes."""

    async def policy_version(self) -> int:
        """The version of the policy in force (0 when none was ever set)."""

    async def get_policy(self) -> PolicyRecord | None: ...

    async def set_policy(
        self, document: str, actor: Actor, source: str, source_hash: str | None
    ) -> int:
        """Replace the policy, recording the change; the new version."""

    async def policy_changes(self, limit: int | None) -> list[PolicyChange]:
        """Changes to the policy, newest first."""


class PinStore(Protocol):
    """The images the admission webhook pinned to a digest."""

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


class UploadStore(Protocol):
    """Upload sessions: their progress, and the lease that lets one request write at a time."""

    async def create_upload(self, upload: Upload) -> None:
        """Record a new session; with ``upload.digest`` (a single-request upload, its lease
        held), BlobBeingDeleted while that blob's bytes are being deleted."""

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
        completing: str | None = None,
    ) -> Upload:
        """Take the upload's lease until ``now + lease``, for ``owner``.

        ``completing``: the request completes the upload as this digest, which the upload
        records; BlobBeingDeleted (nothing changes) while that blob's bytes are being deleted.
        Garbage collection leaves the bytes of a digest alone while an upload completing as
        it holds its lease (``CollectionStore.start_deleting``).

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

    async def complete_upload(
        self, upload_id: str, lease_until: float, digest: str, size: int, now: float
    ) -> None:
        """Record the blob an upload became, link it into the upload's repository and end
        the session, in one transaction, if the request still holds the lease as
        ``lease_until`` and it has not run out at ``now``; otherwise UploadLeaseLost and
        nothing changes. A blob on its way out (``BlobDeletion``) is kept again; one whose
        bytes are being deleted raises BlobBeingDeleted.
        """

    async def delete_upload(self, upload_id: str) -> None: ...

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        """Sessions idle since before ``updated_before`` whose lease has run out (by the
        store's clock)."""


#: Decides what of a repository is garbage (``moorage.registry.collection``).
Planner = Callable[[RepositoryContents], RepositorySweep]


class CollectionStore(Protocol):
    """What garbage collection reads and deletes. What is garbage is decided outside the
    store (a ``Planner``); the store reads consistently and deletes atomically.

    A blob goes in three steps, each a transaction: its record (no repository links it any
    more) becomes a ``BlobDeletion`` (``retire_blobs``); once the grace period has passed,
    the deletion is marked as deleting (``start_deleting``), its bytes are deleted in
    storage, and the deletion is removed (``finish_deleting``). An upload completing as the
    digest before the mark keeps the blob (``complete_upload`` revives it); while marked,
    such an upload is refused (BlobBeingDeleted), so it can never record a blob whose bytes
    are being deleted.
    """

    async def collect_repository(
        self,
        repository: str,
        plan: Planner,
        *,
        pins_since: float,
        history_since: float,
        hosts: Sequence[str],
        apply: bool,
    ) -> RepositorySweep:
        """Read the repository's contents, ask ``plan`` what is garbage and (``apply``)
        delete it: the sweep's manifests, with their references, and its blob links. One
        transaction, which no push, mount or tag change of the repository interleaves with.

        The contents hold the pins made since ``pins_since`` of images named by one of
        ``hosts`` (this registry's names) and this repository, the tag history since
        ``history_since``, and the cluster inventory's images of the repository. A manifest
        of the sweep that is tagged, or that a manifest left in place needs, is kept
        (the planner is wrong): the store never breaks a tag or a kept image.
        """

    async def retire_blobs(self, now: float) -> list[BlobDeletion]:
        """Turn the records of blobs that no repository links into deletions since ``now``;
        the new deletions."""

    async def orphaned_blobs(
        self, stored: Sequence[tuple[str, int]], now: float, *, apply: bool = True
    ) -> list[BlobDeletion]:
        """Of blobs found in storage, as (digest, size), those that neither a record nor a
        deletion names, recorded (``apply``) as deletions since ``now`` (their bytes go after
        the grace period, like any other); the new deletions."""

    async def blob_deletions(self) -> list[BlobDeletion]:
        """Every blob on its way out, oldest first."""

    async def start_deleting(
        self,
        digests: Sequence[str],
        before: float,
        now: float,
        margin: float,
        stale: float,
        owner: str = "",
        dead: Sequence[str] = (),
    ) -> list[BlobDeletion]:
        """Mark as deleting, at ``now`` by ``owner``, those of ``digests`` whose deletion is
        older than ``before``, that have no record again, and that no upload is completing as
        (its lease unexpired ``margin`` seconds before ``now``); the marked ones. A mark older
        than ``stale`` seconds, or made by one of ``dead`` (collectors known to have died),
        is taken over: marked again.

        A collector deletes the bytes only while its mark is well younger than ``stale``, so
        two collectors never delete the bytes of one deletion at once."""

    async def finish_deleting(self, deleted: Sequence[BlobDeletion]) -> None:
        """Remove the deletions of blobs whose bytes are gone, each if still marked as it
        was (``marked_at``: not taken over by another collector meanwhile)."""

    async def upload_ids(self) -> set[str]:
        """The ids of every upload session."""


class InventoryStore(Protocol):
    """The images of this registry the cluster uses, as the last inventory found them."""

    async def replace_inventory(self, images: Sequence[RunningImage], at: float) -> None:
        """Replace the inventory with ``images``, found at ``at``."""

    async def inventory(self) -> tuple[float | None, list[RunningImage]]:
        """When the inventory was taken (None: never), and its images."""


class UsageStore(Protocol):
    """Usage per repository (for chargeback): pulls and pushes counted by the workers, and
    what each repository stores, computed when asked."""

    async def record_usage(self, counts: Sequence[UsageCount]) -> None:
        """Add what the workers counted, in one transaction: each repository's pulls and
        pushes are added to its totals and its last pull and push become the later of the
        stored and the given times; likewise per manifest (``manifest_pulls``). Counts of
        repositories that do not exist are dropped; a repository named twice counts twice.
        """

    async def repository_usage(self, repository: str | None) -> list[RepositoryUsage]:
        """The usage of ``repository`` (an empty list if it does not exist), or of every
        repository (None), sorted by name. Stored bytes are computed from the manifests and
        blob links as they are now: a blob is shared if another repository links it too.
        """

    async def manifest_pulls(self, repository: str) -> list[ManifestPulls]:
        """How often each manifest of ``repository`` was pulled and when last, by digest in
        order: every digest pulled at least once whose manifest is still stored (deleting a
        manifest, or collecting it, forgets its pulls; the repository's totals keep them)."""


class MetadataStore(
    BlobStore,
    ManifestStore,
    PolicyStore,
    PinStore,
    UploadStore,
    CollectionStore,
    InventoryStore,
    UsageStore,
    Protocol,
):
    """The whole store, as the server builds it (``moorage.backends``)."""

    async def connect(self) -> None:
        """Fail now, with the reason, if the store cannot be used (a server unreachable, a
        schema at another version) rather than on the first request."""

    async def close(self) -> None: ...
