"""UsageStore (moorage.meta.protocols), against every backend: counts added by flushes, and
what each repository stores (own and shared blobs, manifests, tags)."""

from __future__ import annotations

from moorage.meta.protocols import MetadataStore
from moorage.model import ManifestPulls, Reference, RepositoryUsage, UsageCount
from tests.meta.conftest import Opener
from tests.meta.helpers import ACTOR, digest, manifest


async def image(meta: MetadataStore, repository: str, seed: str, *layers: tuple[str, int]) -> str:
    """Link ``layers`` (digest seed, size) into ``repository`` and push a manifest using them
    as ``repository:seed``; the manifest's digest."""
    refs = []
    for layer, size in layers:
        await meta.add_blob(repository, digest(layer), size)
        refs.append(Reference("blob", digest(layer)))
    record = manifest(seed, *refs)
    await meta.put_manifest(repository, record, [seed], ACTOR)
    return record.digest


def usage_of(rows: list[RepositoryUsage]) -> dict[str, RepositoryUsage]:
    return {row.repository: row for row in rows}


async def test_stored_bytes_split_own_and_shared_blobs(meta: MetadataStore) -> None:
    app = await image(meta, "team/app", "app", ("base", 1000), ("app-layer", 70))
    tool = await image(meta, "team/tool", "tool", ("base", 1000), ("tool-layer", 5))
    await meta.add_blob("team/tool", digest("loose"), 3)  # linked, no manifest uses it
    await meta.put_manifest("team/tool", manifest("tool"), ["latest", "stable"], ACTOR)
    await meta.add_blob("alone", digest("alone"), 9)

    rows = await meta.repository_usage(None)
    assert [row.repository for row in rows] == ["alone", "team/app", "team/tool"]
    usage = usage_of(rows)
    app_record = await meta.get_manifest("team/app", app)
    assert app_record is not None
    assert usage["team/app"] == RepositoryUsage(
        "team/app",
        manifests=1,
        tags=1,
        blobs=2,
        manifest_bytes=app_record.size,
        own_bytes=70,
        shared_bytes=1000,
        pulls=0,
        pushes=0,
        last_pull=None,
        last_push=None,
    )
    tool_usage = usage["team/tool"]
    assert (tool_usage.manifests, tool_usage.tags, tool_usage.blobs) == (1, 3, 3)
    assert (tool_usage.own_bytes, tool_usage.shared_bytes) == (5 + 3, 1000)
    tool_record = await meta.get_manifest("team/tool", tool)
    assert tool_record is not None
    assert tool_usage.manifest_bytes == tool_record.size
    assert tool_usage.stored_bytes == tool_record.size + 1008
    assert usage["alone"] == RepositoryUsage("alone", 0, 0, 1, 0, 9, 0, 0, 0, None, None)

    # Once the other repository lets go of the base layer, it is the app's own.
    assert await meta.delete_manifest("team/tool", tool, ACTOR)
    assert await meta.unlink_blob("team/tool", digest("base"))
    (only,) = await meta.repository_usage("team/app")
    assert (only.own_bytes, only.shared_bytes) == (1070, 0)
    (tool_now,) = await meta.repository_usage("team/tool")
    assert (tool_now.manifests, tool_now.tags, tool_now.blobs) == (0, 0, 2)
    assert (tool_now.manifest_bytes, tool_now.own_bytes) == (0, 8)


async def test_one_repository_or_none(meta: MetadataStore) -> None:
    await image(meta, "a", "x", ("one", 1))
    await image(meta, "b", "y", ("one", 1))
    assert [row.repository for row in await meta.repository_usage("b")] == ["b"]
    assert await meta.repository_usage("missing") == []
    assert await meta.repository_usage("a/b") == []


async def test_flushes_add_counts_and_keep_the_latest_times(meta: MetadataStore) -> None:
    first = await image(meta, "team/app", "v1", ("layer", 10))
    second = await image(meta, "team/app", "v2", ("layer", 10))
    await meta.record_usage(
        [
            UsageCount(
                "team/app",
                pulls=3,
                pushes=2,
                last_pull=200.0,
                last_push=100.0,
                manifests=(ManifestPulls(first, 2, 150.0), ManifestPulls(second, 1, 200.0)),
            )
        ]
    )
    # Another worker's flush: older pulls, no push.
    await meta.record_usage(
        [
            UsageCount(
                "team/app", pulls=4, last_pull=120.0, manifests=(ManifestPulls(first, 4, 120.0),)
            )
        ]
    )
    (usage,) = await meta.repository_usage("team/app")
    assert (usage.pulls, usage.pushes, usage.last_pull, usage.last_push) == (7, 2, 200.0, 100.0)
    assert await meta.manifest_pulls("team/app") == sorted(
        [ManifestPulls(first, 6, 150.0), ManifestPulls(second, 1, 200.0)],
        key=lambda pulled: pulled.digest,
    )
    # A push only: the last pull stays, the last push moves on.
    await meta.record_usage([UsageCount("team/app", pushes=1, last_push=300.0)])
    (usage,) = await meta.repository_usage("team/app")
    assert (usage.pulls, usage.pushes, usage.last_pull, usage.last_push) == (7, 3, 200.0, 300.0)
    # A deleted manifest's pulls are forgotten (a manifest pushed again starts afresh); the
    # repository's totals keep them.
    assert await meta.delete_manifest("team/app", first, ACTOR) is True
    assert await meta.manifest_pulls("team/app") == [ManifestPulls(second, 1, 200.0)]
    (usage,) = await meta.repository_usage("team/app")
    assert (usage.pulls, usage.last_pull) == (7, 200.0)


async def test_a_flush_covers_many_repositories_at_once(meta: MetadataStore) -> None:
    one = await image(meta, "one", "v1", ("a", 1))
    two = await image(meta, "two", "v1", ("a", 1))
    await meta.record_usage(
        [
            UsageCount("two", pulls=1, last_pull=50.0, manifests=(ManifestPulls(two, 1, 50.0),)),
            UsageCount("one", pulls=2, last_pull=60.0, manifests=(ManifestPulls(one, 2, 60.0),)),
            # The same repository twice (counts are added), and one that does not exist.
            UsageCount("two", pushes=1, last_push=40.0),
            UsageCount(
                "nowhere", pulls=5, last_pull=70.0, manifests=(ManifestPulls(two, 5, 70.0),)
            ),
        ]
    )
    usage = usage_of(await meta.repository_usage(None))
    assert set(usage) == {"one", "two"}
    assert (usage["one"].pulls, usage["one"].pushes, usage["one"].last_push) == (2, 0, None)
    assert (usage["two"].pulls, usage["two"].pushes) == (1, 1)
    assert (usage["two"].last_pull, usage["two"].last_push) == (50.0, 40.0)
    assert await meta.manifest_pulls("two") == [ManifestPulls(two, 1, 50.0)]
    assert await meta.manifest_pulls("nowhere") == []
    await meta.record_usage([])  # nothing to do


async def test_counts_from_two_handles_add_up(meta: MetadataStore, open_meta: Opener) -> None:
    digest_ = await image(meta, "team/app", "v1", ("a", 1))
    other = open_meta()
    try:
        for handle in (meta, other, meta):
            await handle.record_usage(
                [
                    UsageCount(
                        "team/app",
                        pulls=1,
                        last_pull=10.0,
                        manifests=(ManifestPulls(digest_, 1, 10.0),),
                    )
                ]
            )
        (usage,) = await other.repository_usage("team/app")
        assert usage.pulls == 3
        assert await meta.manifest_pulls("team/app") == [ManifestPulls(digest_, 3, 10.0)]
    finally:
        await other.close()
