"""moorage.registry.tags: the guard, the policy cache across handles, configured policies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.errors import RegistryError
from moorage.meta.errors import PolicyChanged, TagRefused
from moorage.meta.sqlite import SQLiteMetadata
from moorage.model import Actor, PutResult, TagGuard
from moorage.policy import Policy
from moorage.registry.tags import GUARD_ATTEMPTS, TagHistory, TagPolicies, make_guard
from tests.support.images import manifest_record

FROZEN = Policy.from_dict(
    {"rules": [{"name": "releases", "tags": "v*", "except_tags": "v-dev", "mode": "immutable"}]}
)
CONFIG = Actor(None, "config", "startup")

ACTOR = Actor("tester", "127.0.0.1", "request-1")


def test_guard_allows_creating_and_repushing_but_not_moving_or_deleting() -> None:
    guard = make_guard(FROZEN, "team/app")
    assert guard("v1", None, "sha256:a") is None
    assert guard("v1", "sha256:a", "sha256:a") is None
    assert guard("latest", "sha256:a", "sha256:b") is None
    assert guard("v-dev", "sha256:a", None) is None
    moved = guard("v1", "sha256:a", "sha256:b")
    assert moved is not None
    assert (moved.tag, moved.current_digest, moved.attempted_digest, moved.rule) == (
        "v1",
        "sha256:a",
        "sha256:b",
        "releases",
    )
    assert "team/app:v1" in moved.message and "sha256:a" in moved.message
    assert "rule 'releases'" in moved.message
    deleted = guard("v1", "sha256:a", None)
    assert deleted is not None and "cannot be deleted" in deleted.message


@pytest.fixture
async def two_handles(tmp_path: Path) -> AsyncIterator[tuple[SQLiteMetadata, SQLiteMetadata]]:
    first, second = SQLiteMetadata(tmp_path / "m.db"), SQLiteMetadata(tmp_path / "m.db")
    yield first, second
    await first.close()
    await second.close()


async def test_a_policy_change_reaches_every_process(
    two_handles: tuple[SQLiteMetadata, SQLiteMetadata],
) -> None:
    here, there = TagPolicies(two_handles[0]), TagPolicies(two_handles[1])
    assert not (await there.check("team/app", "v1")).immutable
    assert await here.replace(FROZEN, ACTOR, "api") == 1
    assert (await there.check("team/app", "v1")).immutable
    assert (await there.current()).version == 1


async def test_configured_policy_is_installed_only_when_it_changes(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "m.db")
    try:
        policies = TagPolicies(meta)
        assert await policies.apply_configured(FROZEN, CONFIG, "configuration")
        assert not await policies.apply_configured(FROZEN, CONFIG, "configuration")
        # An API change stays until the configured policy itself changes.
        await policies.replace(Policy(), ACTOR, "api")
        assert not await policies.apply_configured(FROZEN, CONFIG, "configuration")
        assert not (await policies.check("x", "v1")).immutable
        changed = Policy.from_dict({"default": "immutable"})
        assert await policies.apply_configured(changed, CONFIG, "configuration")
        assert (await policies.check("x", "anything")).immutable
        assert [c.source for c in await policies.changes(None)] == [
            "configuration",
            "api",
            "configuration",
        ]
    finally:
        await meta.close()


async def test_the_stored_policy_says_who_installed_it(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "m.db")
    try:
        policies = TagPolicies(meta)
        assert await policies.stored() is None
        await policies.apply_configured(FROZEN, CONFIG, "configuration")
        await policies.replace(Policy(), ACTOR, "api")
        record = await policies.stored()
        assert record is not None
        assert (record.version, record.user, record.address, record.source) == (
            2,
            ACTOR.user,
            ACTOR.address,
            "api",
        )
        assert Policy.from_json(record.document) == Policy()
    finally:
        await meta.close()


async def test_tags_for_a_digest_lists_every_span(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "m.db")
    try:
        history = TagHistory(meta, TagPolicies(meta))
        one, two = manifest_record("one"), manifest_record("two")
        await meta.put_manifest("a", one, "x", ACTOR)
        await meta.put_manifest("a", two, "x", ACTOR)
        await meta.put_manifest("b", one, "y", ACTOR)
        await history.restore("a", "x", one.digest, ACTOR)
        spans = await history.tags_for(one.digest)
        assert [(s.repository, s.tag, s.until is None) for s in spans] == [
            ("a", "x", False),
            ("b", "y", True),
            ("a", "x", True),
        ]
        assert spans[0].until is not None and spans[0].until >= spans[0].since
    finally:
        await meta.close()


async def test_a_change_is_judged_by_the_policy_in_force_when_it_commits(
    two_handles: tuple[SQLiteMetadata, SQLiteMetadata],
) -> None:
    """A process whose policy is stale (another froze the tags since it last looked) cannot
    move a frozen tag: the store finds the guard's policy replaced, and the change runs again
    under the new one."""
    meta = two_handles[0]
    here, there = TagPolicies(meta), TagPolicies(two_handles[1])
    one, two = manifest_record("one"), manifest_record("two")
    await meta.put_manifest("team/app", one, "v1", ACTOR)
    assert (await here.current()).version == 0
    await there.replace(FROZEN, ACTOR, "api")

    versions: list[int | None] = []

    async def move(guard: TagGuard) -> PutResult:
        versions.append(guard.policy_version)
        return await meta.put_manifest("team/app", two, "v1", ACTOR, guard)

    with pytest.raises(TagRefused):
        await here.guarded("team/app", move)
    assert versions == [0, 1]
    record = await meta.resolve_tag("team/app", "v1")
    assert record is not None and record.digest == one.digest
    # The next change starts from the policy it learnt.
    with pytest.raises(TagRefused):
        await here.guarded("team/app", move)
    assert versions == [0, 1, 1]


async def test_a_policy_that_keeps_changing_fails_the_change_as_unavailable(
    two_handles: tuple[SQLiteMetadata, SQLiteMetadata],
) -> None:
    policies = TagPolicies(two_handles[0])
    tries = 0

    async def always_stale(guard: TagGuard) -> None:
        nonlocal tries
        tries += 1
        raise PolicyChanged(-1, 0)

    with pytest.raises(RegistryError) as raised:
        await policies.guarded("team/app", always_stale)
    assert raised.value.status == 503
    assert "try again" in str(raised.value)
    assert tries == GUARD_ATTEMPTS
