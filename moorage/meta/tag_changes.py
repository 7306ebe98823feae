"""The guarded tag changes, written once for every backend.

Five operations change tags under a guard: ``put_manifest`` (with its tags),
``delete_manifest``, ``delete_tag``, ``restore_tag`` and ``unlink_blob``. Their rules live
here; a backend supplies a ``TagPort``: its SQL, run in the transaction (and under the locks)
the backend opened for the operation. Each operation, in that transaction:

1. reads the state it needs through the port, the stored policy version with it;
2. raises ``PolicyChanged`` unless the guard enforces that version (nothing is written);
3. raises ``MissingReferences`` or ``ManifestNotFound`` for what must exist and does not;
4. asks the guard about every tag the change would move or break. A push collects every
   refusal (the push is all or none, and the error names each refused tag); a deletion stops
   at the first, in the order of the tags' names. Refusals are recorded in their tags'
   history, and nothing else is written;
5. otherwise writes the change and one history event per tag it changes.

Refusals are *returned* as a ``TagRefused``, not raised, so that the transaction commits the
refusal events; the backend raises it after the commit (``unless_refused``). Exceptions
raised here (PolicyChanged, MissingReferences, ManifestNotFound) roll the transaction back.

The operations are coroutines and the port's methods ``async def``: the PostgreSQL port
awaits asyncpg; the SQLite port works synchronously on its writer thread and never
suspends, so that thread runs an operation to completion with one ``send`` (``drive``).

Every history event is made here (``Event``): its action, old and new digest, time, actor,
and for refusals the rule and message. Its time is the port's clock read once per operation,
after the state was read (so under the operation's locks).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from moorage.meta.errors import ManifestNotFound, MissingReferences, PolicyChanged, TagRefused
from moorage.model import (
    Actor,
    ManifestRecord,
    PutResult,
    Reference,
    Refusal,
    TagAction,
    TagGuard,
    push_tags,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a tag's history, as the core decided it; the backend gives it its id."""

    repository: str
    tag: str
    action: TagAction
    old_digest: str | None
    new_digest: str | None
    at: float
    actor: Actor
    #: For refusals: the rule that froze the tag (None when the default did) and the message.
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PushState:
    """What a push finds, read in its transaction."""

    #: The stored policy's version (0: none). A port may leave it 0 for a push without tags,
    #: which judges nothing.
    policy_version: int
    #: The digest each tag of the push points at, in the order asked (None: no such tag).
    current: Sequence[str | None]
    #: The references (in the manifest's order) that are not in the repository.
    missing: Sequence[Reference]


@dataclass(frozen=True, slots=True)
class TagState:
    """One tag as a deletion or restore of it finds it."""

    policy_version: int
    #: The digest the tag points at, or None (no such tag, or no such repository).
    current: str | None
    #: For a restore: whether the repository holds the manifest to point the tag at.
    manifest_found: bool = False


@dataclass(frozen=True, slots=True)
class DeletionState:
    """What deleting a manifest, or unlinking a blob, finds."""

    policy_version: int
    #: Whether there is anything to delete: the manifest, or the blob's link.
    found: bool
    #: Every (tag, digest it points at) the deletion would break, by name: for a manifest, its
    #: tags and those of the indexes listing it; for a blob, the tags of the manifests using
    #: it and of the indexes listing those.
    affected: Sequence[tuple[str, str]] = ()


class TagPort(Protocol):
    """A backend's side of the guarded tag changes: one port per transaction.

    Reads resolve the repository and may remember its id for the writes of the same
    operation. Writes record the events they are given, in order, and make the change that
    goes with them; none of them judges anything.
    """

    def now(self) -> float:
        """The store's clock."""

    async def read_push(
        self,
        repository: str,
        tags: Sequence[str],
        references: Sequence[Reference],
        policy: bool = True,
    ) -> PushState:
        """The tags' current digests, the missing references and (with ``policy``; else it
        may be 0) the policy version; creates the repository if it does not exist (a push
        always stores something)."""

    async def write_push(
        self, repository: str, manifest: ManifestRecord, events: Sequence[Event], now: float
    ) -> None:
        """Store the manifest (if it is not stored yet) with its references, point the tag of
        each event (created or moved) at it, and record the events. The events are the push's
        own: all of them have its repository, the manifest's digest, ``now`` and its actor."""

    async def read_tag(self, repository: str, tag: str, manifest: str | None = None) -> TagState:
        """The tag's digest and the policy version; with ``manifest``, whether the repository
        holds that manifest."""

    async def delete_tag(self, event: Event) -> None:
        """Delete the event's tag and record the event (deleted)."""

    async def point_tag(self, event: Event) -> None:
        """Point the event's tag at its new digest and record the event (restored)."""

    async def read_manifest_deletion(self, repository: str, digest: str) -> DeletionState: ...

    async def delete_manifest(self, repository: str, digest: str, events: Sequence[Event]) -> None:
        """Record the events (deleted: the manifest's own tags), then delete those tags, the
        manifest and its references."""

    async def read_blob_unlink(self, repository: str, digest: str, affected: bool) -> DeletionState:
        """Whether the blob is linked, and the tags it would break if ``affected`` (when a
        guard is to judge them)."""

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        """Remove the blob's link from the repository; whether there was one."""

    async def record(self, events: Sequence[Event]) -> None:
        """Record events that change no tag (refusals)."""


def check_policy(guard: TagGuard | None, stored: int) -> None:
    """PolicyChanged unless ``guard`` (if it is tied to a policy) enforces version ``stored``."""
    version = None if guard is None else guard.policy_version
    if version is not None and stored != version:
        raise PolicyChanged(version, stored)


def unless_refused(outcome: T | TagRefused) -> T:
    """The result of a committed operation, or its refusals raised."""
    if isinstance(outcome, TagRefused):
        raise outcome
    return outcome


def drive(operation: Coroutine[Any, Any, T]) -> T:
    """Run an operation over a port that never suspends (a synchronous backend's) to its end,
    on the calling thread. A port that suspends is a bug: raise rather than block."""
    try:
        operation.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    operation.close()
    raise RuntimeError("a synchronous tag port suspended")


def _refused(refusal: Refusal, actor: Actor, now: float) -> Event:
    return Event(
        refusal.repository,
        refusal.tag,
        "refused",
        refusal.current_digest,
        refusal.attempted_digest,
        now,
        actor,
        refusal.rule,
        refusal.message,
    )


async def _refuse(port: TagPort, refusals: Sequence[Refusal], actor: Actor) -> TagRefused:
    """Record the refusals; the error to raise once that is committed."""
    now = port.now()
    await port.record([_refused(refusal, actor, now) for refusal in refusals])
    return TagRefused(*refusals)


def _first_refusal(guard: TagGuard | None, affected: Sequence[tuple[str, str]]) -> Refusal | None:
    """The guard's first refusal of a deletion breaking each (tag, digest it holds)."""
    if guard is None:
        return None
    for tag, tagged in affected:
        refusal = guard(tag, tagged, None)
        if refusal is not None:
            return refusal
    return None


async def put_manifest(
    port: TagPort,
    repository: str,
    manifest: ManifestRecord,
    tags: Sequence[str],
    actor: Actor,
    guard: TagGuard | None,
) -> PutResult | TagRefused:
    names = push_tags(tags)
    digest = manifest.digest
    judged = bool(names) and guard is not None and guard.policy_version is not None
    state = await port.read_push(repository, names, manifest.references, judged)
    if judged:
        check_policy(guard, state.policy_version)
    if state.missing:
        raise MissingReferences(state.missing)
    previous = dict(zip(names, state.current, strict=True))
    if guard is not None:
        refusals = [
            refusal
            for tag, current in previous.items()
            if (refusal := guard(tag, current, digest)) is not None
        ]
        if refusals:
            return await _refuse(port, refusals, actor)
    now = port.now()
    events = [
        Event(
            repository, tag, "created" if current is None else "moved", current, digest, now, actor
        )
        for tag, current in previous.items()
        if current != digest
    ]
    await port.write_push(repository, manifest, events, now)
    return PutResult(previous)


async def delete_manifest(
    port: TagPort, repository: str, digest: str, actor: Actor, guard: TagGuard | None
) -> bool | TagRefused:
    state = await port.read_manifest_deletion(repository, digest)
    check_policy(guard, state.policy_version)
    refusal = _first_refusal(guard, state.affected)
    if refusal is not None:
        return await _refuse(port, [refusal], actor)
    if not state.found:
        return False
    now = port.now()
    events = [
        Event(repository, tag, "deleted", digest, None, now, actor)
        for tag, tagged in state.affected
        if tagged == digest
    ]
    await port.delete_manifest(repository, digest, events)
    return True


async def delete_tag(
    port: TagPort, repository: str, tag: str, actor: Actor, guard: TagGuard | None
) -> bool | TagRefused:
    state = await port.read_tag(repository, tag)
    check_policy(guard, state.policy_version)
    current = state.current
    if current is None:
        return False
    refusal = None if guard is None else guard(tag, current, None)
    if refusal is not None:
        return await _refuse(port, [refusal], actor)
    await port.delete_tag(Event(repository, tag, "deleted", current, None, port.now(), actor))
    return True


async def restore_tag(
    port: TagPort, repository: str, tag: str, digest: str, actor: Actor, guard: TagGuard | None
) -> str | TagRefused | None:
    state = await port.read_tag(repository, tag, digest)
    check_policy(guard, state.policy_version)
    if not state.manifest_found:
        raise ManifestNotFound(f"{repository}@{digest}")
    current = state.current
    refusal = None if guard is None else guard(tag, current, digest)
    if refusal is not None:
        return await _refuse(port, [refusal], actor)
    if current != digest:
        await port.point_tag(Event(repository, tag, "restored", current, digest, port.now(), actor))
    return current


async def unlink_blob(
    port: TagPort, repository: str, digest: str, actor: Actor, guard: TagGuard | None
) -> bool | TagRefused:
    state = await port.read_blob_unlink(repository, digest, affected=guard is not None)
    check_policy(guard, state.policy_version)
    if not state.found:
        return False
    refusal = _first_refusal(guard, state.affected)
    if refusal is not None:
        return await _refuse(port, [refusal], actor)
    return await port.unlink_blob(repository, digest)
