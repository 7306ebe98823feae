"""The registry: the one object the API and the admission webhooks reach data through,
composed of the blob, upload, manifest, tag policy, tag history and pin services, the
garbage collector and the usage counters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from moorage.digest import Digest, is_digest
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.errors import MissingReferences, TagRefused
from moorage.meta.protocols import ManifestStore, MetadataStore
from moorage.model import Actor, ManifestRecord, ReferrerRecord, push_tags
from moorage.names import is_valid_tag, validate_tag
from moorage.registry.blobs import Blobs
from moorage.registry.collector import Collector, Pause, Progress
from moorage.registry.inventory import Inventory
from moorage.registry.layout import PROBE_KEY
from moorage.registry.manifests import parse_manifest
from moorage.registry.pins import Pins
from moorage.registry.settings import CollectionSettings
from moorage.registry.tags import TagHistory, TagPolicies, denied
from moorage.registry.upload_sessions import LEASE
from moorage.registry.uploads import CHECKPOINT_EVERY, Uploads
from moorage.registry.usage import Usage
from moorage.storage.base import StorageDriver

#: The spec asks registries to accept manifests of at least 4 MiB.
DEFAULT_MAX_MANIFEST_SIZE = 4 * 1024 * 1024
#: The most ``tag`` query parameters one manifest push may carry (the spec asks for at least
#: 10); more are refused with 414.
MAX_PUSH_TAGS = 100


@dataclass(frozen=True, slots=True)
class Pushed:
    manifest: ManifestRecord
    #: Every tag the push pointed at the manifest, each once, in the order the request named
    #: them (the path's tag first).
    tags: tuple[str, ...]
    #: For each of them, the digest it pointed at before (None: the push created it).
    previous: dict[str, str | None]


class Manifests:
    def __init__(
        self,
        meta: ManifestStore,
        policies: TagPolicies,
        *,
        max_size: int = DEFAULT_MAX_MANIFEST_SIZE,
    ) -> None:
        self.meta = meta
        self.policies = policies
        self.max_size = max_size

    @staticmethod
    def _unknown(repository: str, reference: str) -> RegistryError:
        return RegistryError(
            ErrorCode.MANIFEST_UNKNOWN, f"manifest {reference[:150]!r} not found in {repository}"
        )

    async def get(self, repository: str, reference: str) -> ManifestRecord:
        if is_digest(reference):
            record = await self.meta.get_manifest(repository, str(Digest.parse(reference)))
        elif is_valid_tag(reference):
            record = await self.meta.resolve_tag(repository, reference)
        else:
            record = None  # no manifest can have an invalid tag
        if record is None:
            raise self._unknown(repository, reference)
        return record

    async def resolve(self, repository: str, tag: str) -> str | None:
        """The digest ``tag`` points at now in ``repository``, or None."""
        record = await self.meta.resolve_tag(repository, tag)
        return None if record is None else record.digest

    async def put(
        self,
        repository: str,
        reference: str,
        payload: bytes,
        content_type: str | None,
        actor: Actor,
        tags: Sequence[str] = (),
    ) -> Pushed:
        """Store a manifest pushed to ``reference`` (a digest or a tag), and point at it every
        tag the push names: the path's tag, then the ``tag`` query parameters ``tags``.

        The distribution-spec defines ``tag`` parameters on a push by digest. On a push by tag
        they are applied too: their meaning ("point these tags at this manifest as well")
        carries over unchanged, and one rule then holds for every push. Every tag it names is
        validated like a tag in the path, a tag named twice counts once, and the tag policy
        judges all of them in the manifest's transaction: all are applied, or, if any is
        refused, none (DENIED, naming each refused tag and its rule).
        """
        if len(payload) > self.max_size:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                f"manifest is {len(payload)} bytes; the limit is {self.max_size}",
                status=413,
            )
        if len(tags) > MAX_PUSH_TAGS:
            raise RegistryError(
                ErrorCode.PARAMETER_INVALID,
                f"a manifest push may carry at most {MAX_PUSH_TAGS} tag parameters, "
                f"not {len(tags)}",
                status=414,
            )
        names: list[str] = []
        if is_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(payload, expected.algorithm)
            if digest != expected:
                raise RegistryError(
                    ErrorCode.DIGEST_INVALID,
                    f"manifest has digest {digest}, not {expected} as given in the URL",
                )
        else:
            names.append(validate_tag(reference))
            digest = Digest.of(payload)
        names.extend(validate_tag(tag) for tag in tags)
        applied = push_tags(names)
        record = parse_manifest(payload, content_type, digest)
        try:
            if not applied:
                result = await self.meta.put_manifest(repository, record, (), actor)
            else:
                result = await self.policies.guarded(
                    repository,
                    partial(self.meta.put_manifest, repository, record, applied, actor),
                )
        except TagRefused as exc:
            raise denied(exc, pushed=len(applied)) from None
        except MissingReferences as exc:
            raise RegistryError(
                ErrorCode.MANIFEST_BLOB_UNKNOWN,
                f"manifest references {len(exc.missing)} blob(s) or manifest(s) that are not in "
                f"{repository}: push them first",
                detail=[{"kind": r.kind, "digest": r.digest} for r in exc.missing],
            ) from None
        return Pushed(record, applied, result.previous)

    async def delete(self, repository: str, reference: str, actor: Actor) -> None:
        digest = None
        try:
            if is_digest(reference):
                digest = str(Digest.parse(reference))
                deleted = await self.policies.guarded(
                    repository,
                    partial(self.meta.delete_manifest, repository, digest, actor),
                )
            elif is_valid_tag(reference):
                deleted = await self.policies.guarded(
                    repository,
                    partial(self.meta.delete_tag, repository, reference, actor),
                )
            else:
                deleted = False
        except TagRefused as exc:
            raise denied(exc, deleting=digest) from None
        if not deleted:
            raise self._unknown(repository, reference)

    async def tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        if not await self.meta.repository_exists(repository):
            raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {repository} not found")
        return await self.meta.list_tags(repository, limit, last)

    async def referrers(
        self, repository: str, digest: Digest, artifact_type: str | None
    ) -> list[ReferrerRecord]:
        return await self.meta.referrers(repository, str(digest), artifact_type)


class Registry:
    def __init__(
        self,
        storage: StorageDriver,
        meta: MetadataStore,
        *,
        max_manifest_size: int = DEFAULT_MAX_MANIFEST_SIZE,
        upload_ttl: float = 24 * 3600,
        upload_lease: float = LEASE,
        upload_checkpoint: int = CHECKPOINT_EVERY,
        download_redirect: float | None = None,
        collection: CollectionSettings | None = None,
        hosts: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.meta = meta
        self.clock = clock
        self.collection = collection or CollectionSettings()
        #: This registry's host names, as images name it (pins name repositories so).
        self.hosts = frozenset(hosts)
        self.upload_lease = upload_lease
        #: Blob GETs go to the storage's presigned URLs, valid ``download_redirect`` seconds
        #: (None: the registry sends the bytes itself).
        self.blobs = Blobs(storage, meta, download_redirect=download_redirect)
        self.uploads = Uploads(
            storage,
            meta,
            ttl=upload_ttl,
            lease=upload_lease,
            checkpoint_every=upload_checkpoint,
            clock=clock,
        )
        self.policies = TagPolicies(meta)
        self.history = TagHistory(meta, self.policies)
        self.manifests = Manifests(meta, self.policies, max_size=max_manifest_size)
        self.pins = Pins(meta)
        self.inventory = Inventory(meta)
        #: Pulls and pushes counted in memory, flushed in the background (``registry.usage``).
        self.usage = Usage(meta, clock=clock)

    async def delete_blob(self, repository: str, digest: Digest, actor: Actor) -> None:
        """Unlink a blob, unless an immutable tag's image uses it (DENIED)."""
        try:
            await self.policies.guarded(
                repository, partial(self.blobs.delete, repository, digest, actor)
            )
        except TagRefused as exc:
            raise denied(exc, blob=str(digest)) from None

    def collector(
        self,
        *,
        hosts: Iterable[str] | None = None,
        pause: Pause | None = None,
        progress: Progress | None = None,
    ) -> Collector:
        """A garbage collector of this registry; ``hosts``: this registry's names, as the
        images the admission webhook pinned name it (default: the registry's own)."""
        return Collector(
            self.storage,
            self.meta,
            self.collection,
            hosts=self.hosts if hosts is None else hosts,
            lease_margin=2 * self.upload_lease,
            clock=self.clock,
            pause=pause,
            progress=progress,
        )

    async def repositories(self, limit: int | None, last: str | None) -> list[str]:
        return await self.meta.list_repositories(limit, last)

    async def check_metadata(self) -> None:
        """Ask the metadata store a trivial query; raises if it cannot answer (readiness)."""
        await self.meta.list_repositories(1, None)

    async def check_storage(self) -> None:
        """Ask the storage driver the size of a key nothing writes; raises if it cannot
        answer (readiness)."""
        await self.storage.stat(PROBE_KEY)

    async def close(self) -> None:
        await self.meta.close()
        await self.storage.close()
