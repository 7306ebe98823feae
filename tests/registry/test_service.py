"""moorage.registry.service: what the admission webhooks read through the registry."""

from __future__ import annotations

from moorage.model import Actor
from moorage.registry.service import Registry
from tests.support.images import manifest_record

ACTOR = Actor("tester", "127.0.0.1", "request-1")


async def test_resolve_gives_the_digest_a_tag_points_at_now(registry: Registry) -> None:
    first, second = manifest_record("one"), manifest_record("two")
    await registry.meta.put_manifest("team/app", first, ["v1"], ACTOR)
    assert await registry.manifests.resolve("team/app", "v1") == first.digest
    await registry.meta.put_manifest("team/app", second, ["v1"], ACTOR)
    assert await registry.manifests.resolve("team/app", "v1") == second.digest
    assert await registry.manifests.resolve("team/app", "v2") is None
    assert await registry.manifests.resolve("team/other", "v1") is None
