"""The backend-neutral core of the guarded tag changes (moorage.meta.tag_changes), over a port
kept in memory: what it reads, judges and asks the port to write, whatever the backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from moorage.meta import tag_changes
from moorage.meta.errors import ManifestNotFound, MissingReferences, PolicyChanged, TagRefused
from moorage.meta.tag_changes import DeletionState, Event, PushState, TagState, drive
from moorage.model import ManifestRecord, PutResult, Reference, Refusal, TagGuard
from tests.meta.helpers import ACTOR, ALICE, digest, freeze, manifest, stamped

NOW = 1_700_000_000.0
ONE, TWO = manifest("one"), manifest("two")


@dataclass
class MemoryPort:
    """A port over dicts that records every call; its methods never suspend."""

    tags: dict[str, str] = field(default_factory=dict)
    manifests: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)
    #: (tag, digest it holds) that a deletion of anything would break.
    affected: list[tuple[str, str]] = field(default_factory=list)
    policy_version: int = 0
    events: list[Event] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def now(self) -> float:
        return NOW

    async def read_push(
        self,
        repository: str,
        tags: Sequence[str],
        references: Sequence[Reference],
        policy: bool = True,
    ) -> PushState:
        self.calls.append(f"read_push {list(tags)}")
        present = self.blobs | self.manifests
        missing = [r for r in references if r.digest not in present]
        return PushState(self.policy_version, [self.tags.get(t) for t in tags], missing)

    async def write_push(
        self, repository: str, manifest: ManifestRecord, events: Sequence[Event], now: float
    ) -> None:
        self.calls.append("write_push")
        assert now == NOW
        self.manifests.add(manifest.digest)
        for event in events:
            assert event.new_digest == manifest.digest
            self.tags[event.tag] = manifest.digest
        self.events.extend(events)

    async def read_tag(self, repository: str, tag: str, manifest: str | None = None) -> TagState:
        self.calls.append("read_tag")
        return TagState(self.policy_version, self.tags.get(tag), manifest in self.manifests)

    async def delete_tag(self, event: Event) -> None:
        self.calls.append("delete_tag")
        del self.tags[event.tag]
        self.events.append(event)

    async def point_tag(self, event: Event) -> None:
        self.calls.append("point_tag")
        assert event.new_digest is not None
        self.tags[event.tag] = event.new_digest
        self.events.append(event)

    async def read_manifest_deletion(self, repository: str, digest: str) -> DeletionState:
        self.calls.append("read_manifest_deletion")
        return DeletionState(self.policy_version, digest in self.manifests, self.affected)

    async def delete_manifest(self, repository: str, digest: str, events: Sequence[Event]) -> None:
        self.calls.append("delete_manifest")
        self.manifests.discard(digest)
        for event in events:
            del self.tags[event.tag]
        self.events.extend(events)

    async def read_blob_unlink(self, repository: str, digest: str, affected: bool) -> DeletionState:
        self.calls.append(f"read_blob_unlink affected={affected}")
        return DeletionState(
            self.policy_version, digest in self.blobs, self.affected if affected else []
        )

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        self.calls.append("unlink_blob")
        self.blobs.discard(digest)
        return True

    async def record(self, events: Sequence[Event]) -> None:
        self.calls.append("record")
        self.events.extend(events)

    def writes(self) -> list[str]:
        return [c for c in self.calls if not c.startswith("read")]


def refused(tag: str, old: str, new: str | None, user: str = "alice") -> tuple[object, ...]:
    return ("refused", tag, old, new, user, "frozen", f"{tag} is frozen")


def summary(events: list[Event]) -> list[tuple[object, ...]]:
    """(action, tag, old, new, user, rule, reason) of each event."""
    return [
        (e.action, e.tag, e.old_digest, e.new_digest, e.actor.user, e.rule, e.reason)
        for e in events
    ]


def test_a_push_records_each_change_with_who_and_when() -> None:
    port = MemoryPort(tags={"latest": ONE.digest, "v2": TWO.digest})
    put = tag_changes.put_manifest(port, "repo", TWO, ("latest", "v2", "new", "v2"), ALICE, None)
    result = drive(put)
    assert result == PutResult({"latest": ONE.digest, "v2": TWO.digest, "new": None})
    assert port.calls == ["read_push ['latest', 'v2', 'new']", "write_push"]
    assert summary(port.events) == [
        ("moved", "latest", ONE.digest, TWO.digest, "alice", None, None),
        ("created", "new", None, TWO.digest, "alice", None, None),
    ]
    assert all(e.at == NOW and e.actor == ALICE and e.repository == "repo" for e in port.events)


def test_a_push_by_digest_is_a_write_without_events() -> None:
    port = MemoryPort(policy_version=3)
    assert drive(tag_changes.put_manifest(port, "repo", ONE, (), ACTOR, stamped(1))) == PutResult()
    assert port.calls == ["read_push []", "write_push"] and port.events == []


def test_a_push_with_a_stale_guard_writes_nothing() -> None:
    port = MemoryPort(policy_version=2)
    with pytest.raises(PolicyChanged) as info:
        drive(tag_changes.put_manifest(port, "repo", ONE, "t", ACTOR, stamped(1)))
    assert info.value.stored == 2
    assert port.writes() == []


def test_missing_references_come_after_the_policy_and_before_the_guard() -> None:
    layer = digest("layer")
    record = manifest("image", Reference("blob", layer))
    port = MemoryPort(tags={"v1": ONE.digest})
    with pytest.raises(MissingReferences) as info:
        drive(tag_changes.put_manifest(port, "repo", record, "v1", ACTOR, freeze("v1")))
    assert info.value.missing == (Reference("blob", layer),)
    assert port.writes() == []
    port.policy_version = 1
    with pytest.raises(PolicyChanged):
        drive(tag_changes.put_manifest(port, "repo", record, "v1", ACTOR, stamped(0)))


def test_every_refused_tag_of_a_push_is_recorded_and_nothing_else() -> None:
    port = MemoryPort(tags={"v1": ONE.digest, "v2": ONE.digest, "latest": ONE.digest})
    guard = freeze("v1", "v2")
    outcome = drive(
        tag_changes.put_manifest(port, "repo", TWO, ("v2", "latest", "v1"), ALICE, guard)
    )
    assert isinstance(outcome, TagRefused)  # returned: raised once the refusals are committed
    assert [r.tag for r in outcome.refusals] == ["v2", "v1"]
    assert port.writes() == ["record"]
    assert summary(port.events) == [
        refused("v2", ONE.digest, TWO.digest),
        refused("v1", ONE.digest, TWO.digest),
    ]
    assert port.events[0].at == NOW
    with pytest.raises(TagRefused) as info:
        tag_changes.unless_refused(outcome)
    assert info.value is outcome


def test_a_deletion_stops_at_the_first_refusal() -> None:
    port = MemoryPort(
        tags={"a": ONE.digest, "b": TWO.digest, "c": ONE.digest},
        manifests={ONE.digest, TWO.digest},
        affected=[("a", ONE.digest), ("b", TWO.digest), ("c", ONE.digest)],
    )
    outcome = drive(tag_changes.delete_manifest(port, "repo", ONE.digest, ALICE, freeze("b", "c")))
    assert isinstance(outcome, TagRefused) and outcome.refusals == (outcome.refusal,)
    assert outcome.refusal.tag == "b"
    assert summary(port.events) == [refused("b", TWO.digest, None)]
    assert port.writes() == ["record"]


def test_deleting_a_manifest_deletes_its_own_tags() -> None:
    port = MemoryPort(
        tags={"a": ONE.digest, "index": TWO.digest},
        manifests={ONE.digest, TWO.digest},
        affected=[("a", ONE.digest), ("index", TWO.digest)],
    )
    assert drive(tag_changes.delete_manifest(port, "repo", ONE.digest, ACTOR, freeze()))
    assert summary(port.events) == [("deleted", "a", ONE.digest, None, "tester", None, None)]
    assert port.tags == {"index": TWO.digest}


def test_a_guard_is_asked_even_when_the_manifest_is_gone() -> None:
    """Tags on indexes that list a manifest already deleted still protect it from a guard."""
    port = MemoryPort(tags={"v1": TWO.digest}, affected=[("v1", TWO.digest)])
    outcome = drive(tag_changes.delete_manifest(port, "repo", ONE.digest, ALICE, freeze("v1")))
    assert isinstance(outcome, TagRefused)
    assert drive(tag_changes.delete_manifest(port, "repo", ONE.digest, ALICE, None)) is False


def test_deleting_a_tag() -> None:
    port = MemoryPort(tags={"t": ONE.digest, "v1": ONE.digest}, policy_version=1)
    with pytest.raises(PolicyChanged):  # checked first, even for a tag that does not exist
        drive(tag_changes.delete_tag(port, "repo", "missing", ACTOR, stamped(0)))
    assert drive(tag_changes.delete_tag(port, "repo", "missing", ACTOR, stamped(1))) is False
    outcome = drive(tag_changes.delete_tag(port, "repo", "v1", ALICE, freeze("v1")))
    assert isinstance(outcome, TagRefused)
    assert drive(tag_changes.delete_tag(port, "repo", "t", ALICE, freeze("v1"))) is True
    assert summary(port.events) == [
        refused("v1", ONE.digest, None),
        ("deleted", "t", ONE.digest, None, "alice", None, None),
    ]
    assert port.tags == {"v1": ONE.digest}


def test_restoring_a_tag() -> None:
    port = MemoryPort(tags={"t": ONE.digest}, manifests={ONE.digest, TWO.digest})
    with pytest.raises(ManifestNotFound, match="repo@sha256:"):
        drive(tag_changes.restore_tag(port, "repo", "t", digest("nowhere"), ACTOR, None))
    assert drive(tag_changes.restore_tag(port, "repo", "t", ONE.digest, ACTOR, None)) == ONE.digest
    assert port.events == []  # already there: nothing to record
    assert drive(tag_changes.restore_tag(port, "repo", "u", TWO.digest, ALICE, None)) is None
    outcome = drive(tag_changes.restore_tag(port, "repo", "t", TWO.digest, ALICE, freeze("t")))
    assert isinstance(outcome, TagRefused)
    assert summary(port.events) == [
        ("restored", "u", None, TWO.digest, "alice", None, None),
        refused("t", ONE.digest, TWO.digest),
    ]


def test_unlinking_a_blob() -> None:
    layer = digest("layer")
    port = MemoryPort(blobs={layer}, tags={"v1": ONE.digest}, affected=[("v1", ONE.digest)])
    assert drive(tag_changes.unlink_blob(port, "repo", digest("other"), ACTOR, None)) is False
    outcome = drive(tag_changes.unlink_blob(port, "repo", layer, ALICE, freeze("v1")))
    assert isinstance(outcome, TagRefused) and outcome.refusal.attempted_digest is None
    assert drive(tag_changes.unlink_blob(port, "repo", layer, ACTOR, None)) is True
    # Without a guard, nothing is judged, so the affected tags are not even read.
    assert port.calls == [
        "read_blob_unlink affected=False",
        "read_blob_unlink affected=True",
        "record",
        "read_blob_unlink affected=False",
        "unlink_blob",
    ]


def test_a_guard_without_a_policy_version_is_never_stale() -> None:
    port = MemoryPort(policy_version=7)
    guard = TagGuard(lambda tag, current, new: None)
    assert drive(tag_changes.put_manifest(port, "repo", ONE, "t", ACTOR, guard)).previous == {
        "t": None
    }


def test_a_refusal_keeps_the_guards_own_words() -> None:
    def guard(tag: str, current: str | None, new: str | None) -> Refusal | None:
        return Refusal("repo", tag, current or "", new, None, "the default policy says no")

    port = MemoryPort(tags={"t": ONE.digest})
    outcome = drive(tag_changes.put_manifest(port, "repo", TWO, "t", ALICE, TagGuard(guard)))
    assert isinstance(outcome, TagRefused)
    assert (port.events[0].rule, port.events[0].reason) == (None, "the default policy says no")


def test_drive_refuses_a_port_that_suspends() -> None:
    class SuspendingPort(MemoryPort):
        async def read_tag(
            self, repository: str, tag: str, manifest: str | None = None
        ) -> TagState:
            await asyncio.sleep(0)
            return await super().read_tag(repository, tag, manifest)

    with pytest.raises(RuntimeError, match="suspended"):
        drive(tag_changes.delete_tag(SuspendingPort(), "repo", "t", ACTOR, None))
