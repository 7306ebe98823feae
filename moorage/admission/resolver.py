"""Resolving image references to digests, for the pinning webhook.

A ``Resolver`` turns ``ImageReference`` (with a tag) into the digest the tag points at now.
- ``LocalResolver`` answers for images in this registry through the registry itself
  (``Manifests.resolve``): one metadata read, no network, and no race with a push in flight
  (the tag is read from the source of truth).
- Images in other registries go to a remote resolver (``admission.remote``) over the OCI API.
- ``CachingResolver`` remembers other registries' answers: for good for tags the operator
  declares immutable there (``admission.immutable_remote_tags``), briefly otherwise. This
  registry's own tag policy governs pushes to it, not tags elsewhere, so it is not used.
A multi-arch tag resolves to its index digest, which every node can pull.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from moorage import metrics
from moorage.policy import Policy
from moorage.reference import ImageReference


class ResolveError(Exception):
    """The reference could not be resolved; the message is shown to the user."""


@dataclass(frozen=True)
class ResolveContext:
    """What the workload being admitted brings to resolution."""

    namespace: str
    #: Names of the workload's imagePullSecrets (in ``namespace``).
    pull_secrets: tuple[str, ...] = ()
    service_account: str = ""


@dataclass(frozen=True)
class Resolution:
    digest: str
    #: "local", "remote" or "cache", for the record and for operators.
    source: str


class Resolver(Protocol):
    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution: ...


class LocalImages(Protocol):
    """This registry's images, as ``LocalResolver`` reads them (``registry.manifests``)."""

    async def resolve(self, repository: str, tag: str) -> str | None:
        """The digest ``tag`` points at now in ``repository``, or None."""


class LocalResolver:
    """Images whose registry host is one of this registry's own names."""

    def __init__(self, images: LocalImages, hosts: frozenset[str]) -> None:
        self.images = images
        self.hosts = hosts

    def handles(self, reference: ImageReference) -> bool:
        return reference.domain in self.hosts

    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution:
        assert reference.tag is not None
        digest = await self.images.resolve(reference.path, reference.tag)
        if digest is None:
            raise ResolveError(f"{reference} is not in this registry")
        return Resolution(digest, "local")


class RoutingResolver:
    """This registry's images locally; everything else through ``remote``."""

    def __init__(self, local: LocalResolver, remote: Resolver | None) -> None:
        self.local = local
        self.remote = remote

    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution:
        if self.local.handles(reference):
            return await self.local.resolve(reference, context)
        if self.remote is None:
            raise ResolveError(
                f"{reference.domain} is not this registry and resolving other registries is "
                "turned off"
            )
        return await self.remote.resolve(reference, context)


@dataclass
class _Entry:
    resolution: Resolution
    expires: float


@dataclass
class CachingResolver:
    """Caches remote answers: tags ``immutable`` calls immutable for good, others for ``ttl``.

    Answers for this registry's own images are never cached: they are a local read already.
    Lookups of the others count in ``moorage_resolver_cache_lookups_total``, as hits or
    misses.
    """

    inner: RoutingResolver
    immutable: Policy
    ttl: float = 10.0
    max_entries: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _entries: dict[tuple[str, str, tuple[str, ...], str], _Entry] = field(default_factory=dict)

    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution:
        if self.inner.local.handles(reference):
            return await self.inner.resolve(reference, context)
        # Credentials decide what a client may see: the key includes where they come from.
        key = (str(reference), context.namespace, context.pull_secrets, context.service_account)
        now = self.clock()
        entry = self._entries.get(key)
        lookups = metrics.current().resolver_cache
        if entry is not None and entry.expires > now:
            lookups.labels("hit").inc()
            return Resolution(entry.resolution.digest, "cache")
        lookups.labels("miss").inc()
        resolution = await self.inner.resolve(reference, context)
        assert reference.tag is not None
        immutable = self.immutable.decide(reference.repository, reference.tag).immutable
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = _Entry(resolution, float("inf") if immutable else now + self.ttl)
        return resolution
