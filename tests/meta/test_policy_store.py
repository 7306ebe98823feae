"""PolicyStore (moorage.meta.protocols), against every backend."""

from __future__ import annotations

from moorage.meta.protocols import MetadataStore
from tests.meta.helpers import ACTOR, ALICE
from tests.support.clocks import SteppingClock


async def test_policy_is_versioned_and_its_changes_recorded(meta: MetadataStore) -> None:
    assert await meta.policy_version() == 0
    assert await meta.get_policy() is None
    assert await meta.set_policy('{"v": 1}', ALICE, "api", None) == 1
    assert await meta.set_policy('{"v": 2}', ACTOR, "configuration", "hash") == 2
    record = await meta.get_policy()
    assert record is not None
    assert (record.document, record.version, record.source, record.source_hash) == (
        '{"v": 2}',
        2,
        "configuration",
        "hash",
    )
    assert (record.user, record.address) == ("tester", "127.0.0.1")
    changes = await meta.policy_changes(None)
    assert [(c.old_document, c.new_document, c.source) for c in changes] == [
        ('{"v": 1}', '{"v": 2}', "configuration"),
        (None, '{"v": 1}', "api"),
    ]
    assert changes[1].user == "alice" and changes[1].request_id == "req-alice"
    assert len(await meta.policy_changes(1)) == 1


async def test_policy_changes_are_stamped_by_the_store_clock(
    meta: MetadataStore, clock: SteppingClock
) -> None:
    clock.advance(3600)
    before = clock.now
    await meta.set_policy('{"v": 1}', ACTOR, "api", None)
    record = await meta.get_policy()
    change = (await meta.policy_changes(1))[0]
    assert record is not None
    assert before < record.updated_at == change.at <= clock.now
