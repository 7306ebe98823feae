"""The records of the registry's domain: what the metadata store keeps and returns, and what
the services, handlers and webhooks pass around. Plain data, no I/O: every layer may import it.

- manifests: ``Reference``, ``ManifestRecord``, ``ReferrerRecord``, ``PutResult``;
- tags: ``Actor`` (who makes a change), ``Refusal``, ``TagGuard`` (the policy's decision,
  asked inside the store's transaction), ``TagEvent`` (one entry of a tag's history);
- the tag policy as stored: ``PolicyRecord``, ``PolicyChange``;
- admission: ``PinRecord``, ``RunningImage`` (the cluster inventory); uploads: ``Upload``.
- usage per repository: ``UsageCount`` (what a flush of the counters adds),
  ``ManifestPulls``, ``RepositoryUsage`` (a row of the report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

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
    #: The digest the upload is being completed as, once a request that completes it holds
    #: the lease (garbage collection never deletes those bytes meanwhile), or None.
    digest: str | None = None


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
#: Who the tag deletions of retention rules are recorded as made by.
COLLECTOR_ACTOR = Actor(None, "gc", "")


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


@dataclass(frozen=True, slots=True)
class RunningImage:
    """An image of this registry that an object of the cluster uses now (the cluster
    inventory garbage collection keeps): which object, which container, what it names."""

    namespace: str
    #: The object's kind as the API names it ("Pod", "ReplicaSet", "ControllerRevision", ...).
    kind: str
    name: str
    container: str
    #: The image as the object writes it (or a status's imageID), and the repository in
    #: this registry it names (its path, without the host).
    image: str
    repository: str
    tag: str | None
    digest: str | None


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest as garbage collection sees it: what it needs, and when it came."""

    digest: str
    media_type: str
    size: int
    created_at: float
    subject: str | None = None
    references: tuple[Reference, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkedBlob:
    """A blob a repository holds: its size and when it was linked into the repository."""

    digest: str
    size: int
    linked_at: float


@dataclass(frozen=True, slots=True)
class HistoryTarget:
    """A digest a tag pointed at, or was moved or deleted away from, at ``at``."""

    tag: str
    digest: str
    at: float


@dataclass(frozen=True, slots=True)
class RepositoryContents:
    """Everything garbage collection weighs about one repository, read in the transaction
    that deletes what it finds to be garbage.

    ``pins`` and ``history`` are those from ``since`` on (the collection's windows), and
    ``running`` the cluster inventory's images of this repository.
    """

    repository: str
    manifests: tuple[StoredManifest, ...]
    tags: tuple[tuple[str, str], ...]
    blobs: tuple[LinkedBlob, ...]
    pins: tuple[PinRecord, ...] = ()
    history: tuple[HistoryTarget, ...] = ()
    running: tuple[RunningImage, ...] = ()
    #: When each tag got the digest it points at (tag -> time), for retention rules.
    tagged_at: tuple[tuple[str, float], ...] = ()
    #: The last pull of each manifest pulled (digest -> time), for retention rules.
    last_pulls: tuple[tuple[str, float], ...] = ()
    #: The version of the tag policy in force, read in the same transaction (0: none).
    policy_version: int = 0


@dataclass(frozen=True, slots=True)
class ExpiredTag:
    """A tag a retention rule removes: which tag, the digest it points at, the rule, and why
    (recorded in the tag's history)."""

    tag: str
    digest: str
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class RepositorySweep:
    """What garbage collection decided for a repository: what to delete (manifests, blob
    links, and tags retention rules remove), and why everything else is kept (digest ->
    reasons, most telling first; tag -> why a retention rule spared it)."""

    repository: str
    manifests: tuple[StoredManifest, ...] = ()
    blobs: tuple[LinkedBlob, ...] = ()
    kept_manifests: tuple[tuple[StoredManifest, tuple[str, ...]], ...] = ()
    kept_blobs: tuple[tuple[LinkedBlob, tuple[str, ...]], ...] = ()
    tags: tuple[ExpiredTag, ...] = ()
    spared_tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BlobDeletion:
    """A blob on its way out: its record is gone; its bytes go once ``since`` is older
    than the grace period. Once a collector has marked it (at ``marked_at``), its bytes are
    being deleted, and the blob cannot be uploaded again until they are."""

    digest: str
    size: int
    since: float
    reason: str
    marked_at: float | None = None
    #: The collector that marked it (``moorage.process_identity``).
    marked_by: str | None = None

    @property
    def deleting(self) -> bool:
        return self.marked_at is not None


@dataclass(frozen=True, slots=True)
class ManifestPulls:
    """How often a manifest was served (GET) in a period, and when last."""

    digest: str
    pulls: int
    last_pull: float


@dataclass(frozen=True, slots=True)
class UsageCount:
    """What one flush of a worker's counters adds to a repository's usage: pulls (manifest
    GETs served) and pushes (manifest PUTs stored) counted since the last flush, the time of
    the last of each (None: none), and the manifests pulled (the digest served, also when the
    GET named a tag)."""

    repository: str
    pulls: int = 0
    pushes: int = 0
    last_pull: float | None = None
    last_push: float | None = None
    manifests: tuple[ManifestPulls, ...] = ()


@dataclass(frozen=True, slots=True)
class RepositoryUsage:
    """A repository's row of the usage report (chargeback): what it stores and how much it
    is used.

    Bytes: its manifests' payloads, the blobs only it links (``own_bytes``) and the blobs
    other repositories link too (``shared_bytes``, each counted in full in every repository
    sharing it). Pulls and pushes as counted since the registry kept usage.
    """

    repository: str
    manifests: int
    tags: int
    blobs: int
    manifest_bytes: int
    own_bytes: int
    shared_bytes: int
    pulls: int
    pushes: int
    last_pull: float | None
    last_push: float | None

    @property
    def stored_bytes(self) -> int:
        """Everything stored for it: manifests, own and shared blobs."""
        return self.manifest_bytes + self.own_bytes + self.shared_bytes
