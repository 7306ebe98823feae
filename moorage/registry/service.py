"""The registry: one object the API talks to, composed of the blob, upload and manifest services."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from moorage.digest import Digest, is_digest
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.base import (
    Actor,
    ManifestRecord,
    MetadataStore,
    MissingReferences,
    ReferrerRecord,
    TagRefused,
)
from moorage.names import is_valid_tag, validate_tag
from moorage.registry.blobs import Blobs
from moorage.registry.manifests import parse_manifest
from moorage.registry.tags import TagHistory, TagPolicies, denied
from moorage.registry.uploads import Uploads
from moorage.storage.base import StorageDriver

#: The spec asks registries to accept manifests of at least 4 MiB.
DEFAULT_MAX_MANIFEST_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Pushed:
    manifest: ManifestRecord
    previous_digest: str | None


class Manifests:
    def __init__(
        self,
        meta: MetadataStore,
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

    async def put(
        self,
        repository: str,
        reference: str,
        payload: bytes,
        content_type: str | None,
        actor: Actor,
    ) -> Pushed:
        if len(payload) > self.max_size:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                f"manifest is {len(payload)} bytes; the limit is {self.max_size}",
                status=413,
            )
        tag: str | None = None
        if is_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(payload, expected.algorithm)
            if digest != expected:
                raise RegistryError(
                    ErrorCode.DIGEST_INVALID,
                    f"manifest has digest {digest}, not {expected} as given in the URL",
                )
        else:
            tag = validate_tag(reference)
            digest = Digest.of(payload)
        record = parse_manifest(payload, content_type, digest)
        try:
            if tag is None:
                result = await self.meta.put_manifest(repository, record, None, actor)
            else:
                result = await self.policies.guarded(
                    repository, partial(self.meta.put_manifest, repository, record, tag, actor)
                )
        except TagRefused as exc:
            raise denied(exc) from None
        except MissingReferences as exc:
            raise RegistryError(
                ErrorCode.MANIFEST_BLOB_UNKNOWN,
                f"manifest references {len(exc.missing)} blob(s) or manifest(s) that are not in "
                f"{repository}: push them first",
                detail=[{"kind": r.kind, "digest": r.digest} for r in exc.missing],
            ) from None
        return Pushed(record, result.previous_digest)

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
        upload_lease: float = 300,
        download_redirect: float | None = None,
    ) -> None:
        self.storage = storage
        #: Send blob GETs to the storage's presigned URLs, valid this many seconds (or None).
        self.download_redirect = download_redirect
        self.meta = meta
        self.blobs = Blobs(storage, meta)
        self.uploads = Uploads(storage, meta, ttl=upload_ttl, lease=upload_lease)
        self.policies = TagPolicies(meta)
        self.history = TagHistory(meta, self.policies)
        self.manifests = Manifests(meta, self.policies, max_size=max_manifest_size)

    async def delete_blob(self, repository: str, digest: Digest, actor: Actor) -> None:
        """Unlink a blob, unless an immutable tag's image uses it (DENIED)."""
        try:
            await self.policies.guarded(
                repository, partial(self.blobs.delete, repository, digest, actor)
            )
        except TagRefused as exc:
            raise denied(exc, blob=str(digest)) from None

    async def repositories(self, limit: int | None, last: str | None) -> list[str]:
        return await self.meta.list_repositories(limit, last)

    async def close(self) -> None:
        await self.meta.close()
        await self.storage.close()
