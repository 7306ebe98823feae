"""Usage per repository, for chargeback: pulls and pushes counted in memory, flushed to the
store in the background; what each repository stores and how much it is used.

Counting costs the hot path nothing it can measure: a manifest GET served calls ``pulled``,
which reads the clock and increments a counter in this worker's memory (no I/O, no lock, no
await); a manifest PUT stored calls ``pushed``. Each worker flushes its counters every
``FLUSH_INTERVAL`` seconds and when it stops (``moorage.api.app``), all of them in one write
transaction of the store (``UsageStore.record_usage``), which adds the counts and keeps the
later times. So the store lags the workers by up to ``FLUSH_INTERVAL``, and a worker that
dies without stopping (SIGKILL, a crash, the machine going down) loses what it counted since
its last flush: at most that long's worth of pulls and pushes. A flush that fails keeps its
counts for the next one; one whose outcome is unknown (the connection lost while committing)
may count them twice.

Manifest pulls are kept per digest too (``manifest_pulls``): the digest served, also when the
GET named a tag, with its last pull, for retention rules ("tags pulled within a period").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from moorage.errors import ErrorCode, RegistryError
from moorage.meta.protocols import UsageStore
from moorage.model import ManifestPulls, RepositoryUsage, UsageCount

#: Seconds between two flushes of a worker's counters.
FLUSH_INTERVAL = 10.0


class Usage:
    """This worker's counters, and the usage report."""

    def __init__(self, meta: UsageStore, *, clock: Callable[[], float] = time.time) -> None:
        self.meta = meta
        self.clock = clock
        #: (repository, digest) -> [pulls, last pull], since the last flush.
        self._pulls: dict[tuple[str, str], list[float]] = {}
        #: repository -> [pushes, last push], since the last flush.
        self._pushes: dict[str, list[float]] = {}
        self._flushing = asyncio.Lock()

    def pulled(self, repository: str, digest: str) -> None:
        """Count a manifest GET served (the hot path: memory only)."""
        now = self.clock()
        counter = self._pulls.get((repository, digest))
        if counter is None:
            self._pulls[repository, digest] = [1, now]
        else:
            counter[0] += 1
            counter[1] = now

    def pushed(self, repository: str) -> None:
        """Count a manifest PUT stored."""
        now = self.clock()
        counter = self._pushes.get(repository)
        if counter is None:
            self._pushes[repository] = [1, now]
        else:
            counter[0] += 1
            counter[1] = now

    @property
    def pending(self) -> bool:
        """Whether anything was counted since the last flush."""
        return bool(self._pulls or self._pushes)

    async def flush(self) -> int:
        """Write what was counted since the last flush to the store, in one transaction; the
        number of repositories written. If the write fails, its counts stay for the next flush
        (and the error is raised). Cancelling the caller does not cancel a write under way:
        it runs to its end, and the next flush waits for it."""
        return await asyncio.shield(self._flush())

    async def _flush(self) -> int:
        async with self._flushing:  # one flush at a time, so failed counts go back in order
            pulls, self._pulls = self._pulls, {}
            pushes, self._pushes = self._pushes, {}
            counts = _counts(pulls, pushes)
            if not counts:
                return 0
            try:
                await self.meta.record_usage(counts)
            except BaseException:
                self._restore(pulls, pushes)
                raise
            return len(counts)

    def _restore(
        self, pulls: dict[tuple[str, str], list[float]], pushes: dict[str, list[float]]
    ) -> None:
        """Put the counts of a failed flush back, with what was counted meanwhile."""
        for key, (count, last) in pulls.items():
            counter = self._pulls.setdefault(key, [0, last])
            counter[0] += count
            counter[1] = max(counter[1], last)
        for repository, (count, last) in pushes.items():
            counter = self._pushes.setdefault(repository, [0, last])
            counter[0] += count
            counter[1] = max(counter[1], last)

    async def report(self, repository: str | None = None) -> list[RepositoryUsage]:
        """The usage of ``repository`` (NAME_UNKNOWN if it does not exist), or of every
        repository, sorted by name. This worker's counters are flushed first, so the report
        includes them; other workers' come with their next flush."""
        await self.flush()
        rows = await self.meta.repository_usage(repository)
        if repository is not None and not rows:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {repository} not found")
        return rows


def _counts(
    pulls: dict[tuple[str, str], list[float]], pushes: dict[str, list[float]]
) -> list[UsageCount]:
    """The counters as one ``UsageCount`` per repository."""
    manifests: dict[str, list[ManifestPulls]] = {}
    for (repository, digest), (count, last) in pulls.items():
        manifests.setdefault(repository, []).append(ManifestPulls(digest, int(count), last))
    counts = []
    for repository in sorted(manifests.keys() | pushes.keys()):
        pulled = manifests.get(repository, [])
        push = pushes.get(repository)
        counts.append(
            UsageCount(
                repository,
                pulls=sum(m.pulls for m in pulled),
                pushes=0 if push is None else int(push[0]),
                last_pull=max((m.last_pull for m in pulled), default=None),
                last_push=None if push is None else push[1],
                manifests=tuple(sorted(pulled, key=lambda m: m.digest)),
            )
        )
    return counts
