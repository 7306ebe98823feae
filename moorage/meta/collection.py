"""Garbage collection's rules that every backend applies the same way (``CollectionStore``):
what a sweep may delete, and the contents read for a repository, from rows.

A planner decides what is garbage; the store deletes only what ``checked`` leaves of it, so
no planner, however wrong, can make a store break a tag or an image it keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from moorage.meta.tag_changes import Event
from moorage.model import (
    COLLECTOR_ACTOR,
    BlobDeletion,
    HistoryTarget,
    LinkedBlob,
    PinRecord,
    Reference,
    RepositoryContents,
    RepositorySweep,
    RunningImage,
    StoredManifest,
)

Row = Sequence[Any]

#: Columns of the rows ``contents`` takes, in order (a table alias is the caller's).
MANIFEST_COLUMNS = "digest, media_type, size, created_at, subject"
REFERENCE_COLUMNS = "digest, kind, target"
HISTORY_COLUMNS = "tag, old_digest, new_digest, at"
TAG_COLUMNS = "name, digest, updated_at"
RUNNING_COLUMNS = "namespace, kind, name, container, image, repository, tag, digest"
DELETION_COLUMNS = "digest, size, since, reason, marked_at, marked_by"
#: The reason of a deletion of bytes no record names (``orphaned_blobs``).
ORPHANED = "stored bytes that no record names"


def deletion(row: Row) -> BlobDeletion:
    """A deletion from its row (``DELETION_COLUMNS``)."""
    return BlobDeletion(row[0], int(row[1]), *row[2:])


def contents(
    repository: str,
    manifests: Iterable[Row],
    references: Iterable[Row],
    tags: Iterable[Row],
    blobs: Iterable[Row],
    pins: Iterable[PinRecord],
    history: Iterable[Row],
    running: Iterable[Row],
    pulls: Iterable[Row] = (),
    policy_version: int = 0,
) -> RepositoryContents:
    """The contents of a repository, from its rows: manifests (``MANIFEST_COLUMNS``), their
    references (``REFERENCE_COLUMNS``), tags (``TAG_COLUMNS``), blob links (digest, size,
    linked at), pins, tag events (``HISTORY_COLUMNS``), running images (``RUNNING_COLUMNS``),
    the last pulls of manifests (digest, last pull) and the tag policy's version."""
    tag_rows = [tuple(row) for row in tags]
    needs: dict[str, list[Reference]] = {}
    for digest, kind, target in references:
        needs.setdefault(digest, []).append(Reference(kind, target))
    targets: list[HistoryTarget] = []
    for tag, old, new, at in history:
        targets.extend(HistoryTarget(tag, digest, at) for digest in (old, new) if digest)
    return RepositoryContents(
        repository=repository,
        manifests=tuple(
            StoredManifest(d, media_type, size, created, subject, tuple(needs.get(d, ())))
            for d, media_type, size, created, subject in manifests
        ),
        tags=tuple((name, digest) for name, digest, _ in tag_rows),
        blobs=tuple(LinkedBlob(d, size, linked) for d, size, linked in blobs),
        pins=tuple(pins),
        history=tuple(targets),
        running=tuple(RunningImage(*row) for row in running),
        tagged_at=tuple((name, at) for name, _, at in tag_rows),
        last_pulls=tuple((digest, at) for digest, at in pulls),
        policy_version=policy_version,
    )


def running_values(image: RunningImage) -> tuple[str | None, ...]:
    """A running image in the order of ``RUNNING_COLUMNS``."""
    return (
        image.namespace, image.kind, image.name, image.container, image.image, image.repository,
        image.tag, image.digest,
    )  # fmt: skip


def pinned_as(repository: str, hosts: Sequence[str]) -> list[str]:
    """How pins name the repository: with each of this registry's host names."""
    return [f"{host}/{repository}" for host in hosts]


def checked(contents: RepositoryContents, sweep: RepositorySweep) -> RepositorySweep:
    """``sweep`` without what would break a tag or a kept manifest: a manifest a tag points
    at or that a manifest left in place needs, and a blob such a manifest uses; and without
    tag removals of tags that do not point where the sweep says. The stores apply only this,
    so no planner can make them break an image."""
    doomed = {m.digest for m in sweep.manifests}
    for _, digest in contents.tags:
        doomed.discard(digest)
    changed = True
    while changed:  # keeping a manifest keeps what it needs, which may be doomed too
        changed = False
        for manifest in contents.manifests:
            if manifest.digest in doomed:
                continue
            for reference in manifest.references:
                if reference.kind == "manifest" and reference.digest in doomed:
                    doomed.discard(reference.digest)
                    changed = True
    needed = {
        reference.digest
        for manifest in contents.manifests
        if manifest.digest not in doomed
        for reference in manifest.references
        if reference.kind == "blob"
    }
    manifests = tuple(m for m in sweep.manifests if m.digest in doomed)
    blobs = tuple(b for b in sweep.blobs if b.digest not in needed)
    present = set(contents.tags)
    tags = tuple(t for t in sweep.tags if (t.tag, t.digest) in present)
    if (len(manifests), len(blobs), len(tags)) == (
        len(sweep.manifests),
        len(sweep.blobs),
        len(sweep.tags),
    ):
        return sweep
    return dataclasses.replace(sweep, manifests=manifests, blobs=blobs, tags=tags)


def expired_events(sweep: RepositorySweep, now: float) -> list[Event]:
    """The history events of the tags the sweep removes (deleted, by the collector, with the
    retention rule and its reason)."""
    return [
        Event(
            sweep.repository, t.tag, "deleted", t.digest, None, now, COLLECTOR_ACTOR, t.rule,
            t.reason,
        )
        for t in sweep.tags
    ]  # fmt: skip
