"""Garbage collection: one run over the whole registry, online, on any backend and driver.

Pushes, mounts and pulls go on while it runs, on every replica. A run takes these steps, each
safe to stop after (a rerun finishes the job, and nothing kept is ever lost):

1. **repositories**: each repository is read, judged (``collection.plan``: what is kept, and
   why) and swept in one transaction of the metadata store: its garbage manifests and the
   links to blobs no kept manifest uses go;
2. **retire**: records of blobs no repository links any more become deletions;
3. **orphans**: bytes in storage that no record names (a crash between storing and
   recording them), older than the grace period, become deletions too;
4. **uploads**: upload data no session names any more goes, once older than the grace period
   and than an hour (``LEFTOVER_AGE``);
5. **bytes**: deletions older than the grace period are marked as deleting (from then on no
   upload can complete as the digest, and none was completing as it), their bytes are
   deleted, and the deletions removed. An upload that completed before the mark revived the
   blob, so the mark skips it;
6. **storage**: the driver's own leftovers (temporary files, unreferenced S3 segments,
   unfinished multipart uploads) go, once as old as upload data.

Bytes are deleted only after their record is gone *and* the grace period has passed, so
downloads under way finish. A dry run reads the same and changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from moorage import process_identity
from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.errors import PolicyChanged
from moorage.meta.protocols import CollectionStore, InventoryStore, ManifestStore, PolicyStore
from moorage.model import BlobDeletion, RepositorySweep
from moorage.registry import collection
from moorage.registry.collection import Windows
from moorage.registry.layout import blob_digest, blob_key, upload_id
from moorage.registry.retention import Retention
from moorage.registry.settings import CollectionSettings
from moorage.registry.tags import GUARD_ATTEMPTS, TagPolicies
from moorage.storage.base import StorageDriver, StoredObject, SweepReport

#: Called between steps with the step's name (tests pause or stop a run there).
Pause = Callable[[str], Awaitable[None]]
#: Told about progress: the step, how many of its items are done, and of how many.
Progress = Callable[[str, int, int], None]

#: The steps, in order, as ``Pause`` names them (after each).
STEPS = ("repository", "retire", "orphans", "uploads", "mark", "delete", "storage")

#: Deletions marked and deleted together.
BATCH = 500
#: Seconds upload data of no session and a driver's own leftovers are kept at least, even
#: with a shorter grace period (a slow client may stream one segment for minutes).
LEFTOVER_AGE = 3600.0
#: Blobs' bytes deleted at once (S3 deletes are round trips).
DELETING_AT_ONCE = 16
#: Seconds after which a collector's mark on a deletion is taken over by another collector
#: (the first stopped half way). A collector deletes bytes only within half of it from its
#: mark, so two never delete the bytes of one deletion at once.
STALE_MARK = 900.0


class InventoryTooOld(RegistryError):
    """The cluster inventory is older than ``gc.inventory_max_age``: what runs now is not
    known, so nothing may be collected."""

    def __init__(self, age: float, limit: float) -> None:
        super().__init__(
            ErrorCode.UNKNOWN,
            f"the cluster inventory is {age:.0f} s old, older than gc.inventory_max_age "
            f"({limit:.0f} s): what runs is not known, so nothing is collected; check that "
            "the admission webhooks (which take it) run and can list workloads",
            status=503,
        )


class CollectingStore(CollectionStore, InventoryStore, ManifestStore, PolicyStore, Protocol):
    """What garbage collection needs of the metadata store."""


@dataclass
class CollectionReport:
    """What a run did (or, for a dry run, would do), and why the rest is kept."""

    dry_run: bool
    started: float
    finished: float = 0.0
    repositories: list[RepositorySweep] = field(default_factory=list)
    #: Blob records that no repository holds any more, now deletions.
    retired: list[BlobDeletion] = field(default_factory=list)
    #: Stored bytes that no record named, now deletions.
    orphaned: list[BlobDeletion] = field(default_factory=list)
    #: Upload data of no session, deleted.
    upload_data: list[StoredObject] = field(default_factory=list)
    #: Blobs whose bytes were deleted.
    deleted: list[BlobDeletion] = field(default_factory=list)
    #: Deletions whose bytes wait for the grace period to pass.
    waiting: list[BlobDeletion] = field(default_factory=list)
    storage: SweepReport | None = None

    @property
    def manifests_deleted(self) -> int:
        return sum(len(sweep.manifests) for sweep in self.repositories)

    @property
    def tags_deleted(self) -> int:
        """Tags retention rules removed."""
        return sum(len(sweep.tags) for sweep in self.repositories)

    @property
    def links_deleted(self) -> int:
        return sum(len(sweep.blobs) for sweep in self.repositories)

    @property
    def bytes_freed(self) -> int:
        """Bytes deleted from storage (or that would be): blobs, upload data, leftovers."""
        freed = sum(d.size for d in self.deleted) + sum(o.size for o in self.upload_data)
        return freed + (self.storage.bytes if self.storage is not None else 0)


class Collector:
    def __init__(
        self,
        storage: StorageDriver,
        meta: CollectingStore,
        settings: CollectionSettings,
        *,
        hosts: Iterable[str] = (),
        lease_margin: float = 60.0,
        clock: Callable[[], float] = time.time,
        pause: Pause | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.storage = storage
        self.meta = meta
        self.settings = settings
        #: This registry's host names, as pinned images name them.
        self.hosts = tuple(sorted(set(hosts)))
        #: Seconds past its lease an upload completing as a digest still protects it (clocks
        #: of replicas differ).
        self.lease_margin = lease_margin
        self.clock = clock
        self._pause = pause
        self._progress = progress

    async def run(self, *, dry_run: bool = False) -> CollectionReport:
        """Collect (or, for a dry run, say what would go); InventoryTooOld if what the
        cluster runs is not known recently enough."""
        now = self.clock()
        taken, _ = await self.meta.inventory()
        limit = self.settings.inventory_max_age
        if taken is not None and limit and now - taken > limit:
            raise InventoryTooOld(now - taken, limit)
        report = CollectionReport(dry_run=dry_run, started=now)
        windows = Windows(
            now=now,
            grace=self.settings.grace,
            untagged_after=None if self.settings.keep_untagged else self.settings.untagged_after,
            pins=self.settings.pins_window,
            history=self.settings.history_window,
        )
        young = now - self.settings.grace
        await self._repositories(report, windows, apply=not dry_run)
        if dry_run:
            report.retired = self._would_retire(report, now)
        else:
            report.retired = await self.meta.retire_blobs(self.clock())
        await self._step("retire")
        report.orphaned = await self._orphans(young, now, apply=not dry_run)
        await self._step("orphans")
        # Leftovers of writers are left alone for at least LEFTOVER_AGE, whatever the grace:
        # nothing in the metadata fences a writer that is slow to name what it stored.
        leftovers = now - max(self.settings.grace, LEFTOVER_AGE)
        report.upload_data = await self._upload_data(leftovers, apply=not dry_run)
        await self._step("uploads")
        await self._bytes(report, young, apply=not dry_run)
        report.storage = await self.storage.sweep(leftovers, dry_run=dry_run)
        await self._step("storage")
        report.finished = self.clock()
        return report

    async def _step(self, name: str) -> None:
        if self._pause is not None:
            await self._pause(name)

    def _told(self, step: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(step, done, total)

    async def _repositories(
        self, report: CollectionReport, windows: Windows, *, apply: bool
    ) -> None:
        names: list[str] = []
        last: str | None = None
        while page := await self.meta.list_repositories(1000, last):
            names += page
            last = page[-1]

        policies = TagPolicies(self.meta)
        state = await policies.current()
        retention = Retention.from_documents(self.settings.retention, state.policy, state.version)
        history_since = min(windows.history_since, windows.now - retention.longest_untagged)
        for done, name in enumerate(names, 1):
            for _ in range(GUARD_ATTEMPTS):
                try:
                    sweep = await self.meta.collect_repository(
                        name,
                        partial(collection.plan, windows=windows, retention=retention),
                        pins_since=windows.now - windows.pins,
                        history_since=history_since,
                        hosts=self.hosts,
                        apply=apply,
                    )
                    break
                except PolicyChanged:  # judged under another policy: judge again
                    state = await policies.current()
                    retention = dataclasses.replace(
                        retention, policy=state.policy, policy_version=state.version
                    )
            else:
                raise RegistryError(
                    ErrorCode.UNKNOWN,
                    f"the tag policy changed {GUARD_ATTEMPTS} times while {name} was collected",
                    status=503,
                )
            report.repositories.append(sweep)
            self._told("repositories", done, len(names))
            await self._step("repository")

    @staticmethod
    def _would_retire(report: CollectionReport, now: float) -> list[BlobDeletion]:
        """For a dry run: the blobs every repository holding them would unlink."""
        kept = {blob.digest for sweep in report.repositories for blob, _ in sweep.kept_blobs}
        unlinked = {
            blob.digest: blob.size
            for sweep in report.repositories
            for blob in sweep.blobs
            if blob.digest not in kept
        }
        return [
            BlobDeletion(digest, size, now, "no repository holds it")
            for digest, size in sorted(unlinked.items())
        ]

    async def _orphans(self, young: float, now: float, *, apply: bool) -> list[BlobDeletion]:
        """Stored blob bytes older than ``young`` that no record or deletion names."""
        stored: dict[str, int] = {}
        async for found in self.storage.list_objects("blobs/"):
            digest = blob_digest(found.key)
            if digest is not None and found.modified < young:
                stored[str(digest)] = found.size
        return await self.meta.orphaned_blobs(sorted(stored.items()), now, apply=apply)

    async def _upload_data(self, young: float, *, apply: bool) -> list[StoredObject]:
        """Upload data older than ``young`` of sessions that no longer exist."""
        stale = [
            found
            async for found in self.storage.list_objects("uploads/")
            if found.modified < young and upload_id(found.key) is not None
        ]
        if not stale:
            return []
        sessions = await self.meta.upload_ids()
        gone = [found for found in stale if upload_id(found.key) not in sessions]
        if apply:
            for found in gone:
                await self.storage.delete(found.key)
        return gone

    async def _bytes(self, report: CollectionReport, young: float, *, apply: bool) -> None:
        deletions = await self.meta.blob_deletions()
        if not apply:
            deletions += report.retired + report.orphaned
        due = [d for d in deletions if d.deleting or d.since < young]
        owner = str(process_identity.current())
        # Marks of collectors that died on this host are taken over now, not once stale.
        markers = {d.marked_by for d in due if d.marked_by and d.marked_by != owner}
        dead = sorted(m for m in markers if process_identity.has_exited(m))
        report.waiting = [d for d in deletions if not (d.deleting or d.since < young)]
        if not apply:
            report.deleted = due
            await self._step("mark")
            await self._step("delete")
            return
        for start in range(0, len(due), BATCH):
            batch = [d.digest for d in due[start : start + BATCH]]
            marked = await self.meta.start_deleting(
                batch, young, self.clock(), self.lease_margin, STALE_MARK, owner, dead
            )
            deadline = time.monotonic() + STALE_MARK / 2
            await self._step("mark")
            deleted: list[BlobDeletion] = []
            for start_at in range(0, len(marked), DELETING_AT_ONCE):
                if time.monotonic() > deadline:
                    break  # another collector may take these over now: leave them
                chunk = marked[start_at : start_at + DELETING_AT_ONCE]
                await asyncio.gather(
                    *(self.storage.delete(blob_key(Digest.parse(d.digest))) for d in chunk)
                )
                deleted += chunk
            await self._step("delete")
            await self.meta.finish_deleting(deleted)
            report.deleted += deleted
            self._told("bytes", min(start + BATCH, len(due)), len(due))
