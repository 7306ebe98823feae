"""BlobStore (moorage.meta.protocols), against every backend."""

from __future__ import annotations

import pytest

from moorage.meta.errors import PolicyChanged, TagRefused
from moorage.meta.protocols import MetadataStore
from moorage.model import Reference
from tests.meta.helpers import ACTOR, ALICE, digest, freeze, manifest, stamped


async def test_blobs_are_linked_per_repository(meta: MetadataStore) -> None:
    blob = digest("layer")
    assert await meta.find_blob(blob) is None
    await meta.add_blob("team/app", blob, 42)
    assert await meta.blob_size("team/app", blob) == 42
    assert await meta.blob_size("team/other", blob) is None
    assert await meta.find_blob(blob) == 42
    await meta.add_blob("team/app", blob, 42)  # idempotent
    assert await meta.unlink_blob("team/app", blob) is True
    assert await meta.unlink_blob("team/app", blob) is False
    assert await meta.blob_size("team/app", blob) is None


async def test_mount_from_source_or_anywhere(meta: MetadataStore) -> None:
    blob = digest("shared")
    await meta.add_blob("src", blob, 7)
    assert await meta.mount_blob("dst", blob, "elsewhere") is None
    assert await meta.blob_size("dst", blob) is None
    assert await meta.mount_blob("dst", blob, "src") == 7
    assert await meta.blob_size("dst", blob) == 7
    assert await meta.mount_blob("third", blob, None) == 7
    assert await meta.mount_blob("fourth", digest("unknown"), None) is None


async def test_unlinking_a_blob_a_guarded_tag_uses_is_refused(meta: MetadataStore) -> None:
    layer, spare = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    for blob in (layer, spare):
        await meta.add_blob("repo", blob, 10)
    image = manifest("image", Reference("blob", layer))
    index = manifest("index", Reference("manifest", image.digest))
    await meta.put_manifest("repo", image, "loose", ACTOR)
    await meta.put_manifest("repo", index, "v1", ACTOR)

    with pytest.raises(TagRefused) as info:  # through the index v1 points at
        await meta.unlink_blob("repo", layer, ALICE, freeze("v1"))
    assert (info.value.refusal.tag, info.value.refusal.current_digest) == ("v1", index.digest)
    assert await meta.blob_size("repo", layer) == 10
    latest = (await meta.tag_history("repo", "v1", 1, None))[0]
    assert (latest.action, latest.user, latest.new_digest) == ("refused", "alice", None)
    with pytest.raises(TagRefused):  # directly
        await meta.unlink_blob("repo", layer, ALICE, freeze("loose"))

    assert await meta.unlink_blob("repo", spare, ALICE, freeze("v1", "loose"))  # nobody uses it
    assert await meta.unlink_blob("repo", layer, ALICE, freeze("other"))
    assert await meta.blob_size("repo", layer) is None
    assert await meta.unlink_blob("repo", layer, ALICE, freeze("v1")) is False
    assert await meta.unlink_blob("nowhere", layer, ALICE, freeze("v1")) is False


async def test_an_unlink_guarded_by_a_replaced_policy_changes_nothing(
    meta: MetadataStore,
) -> None:
    layer = digest("layer")
    await meta.add_blob("repo", layer, 10)
    await meta.put_manifest("repo", manifest("one", Reference("blob", layer)), "t", ACTOR)
    assert await meta.set_policy('{"rules": []}', ACTOR, "api", None) == 1
    with pytest.raises(PolicyChanged) as info:
        await meta.unlink_blob("repo", layer, ALICE, stamped(0))
    assert info.value.stored == 1
    assert await meta.blob_size("repo", layer) == 10
    assert await meta.unlink_blob("repo", layer, ALICE, stamped(1))
    assert await meta.blob_size("repo", layer) is None
