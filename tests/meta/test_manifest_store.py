"""ManifestStore (moorage.meta.protocols), against every backend: manifests, their references
and tags, listings and referrers. Tag history, pushes with several tags and guarded changes
have modules of their own (test_manifest_store_*.py)."""

from __future__ import annotations

import pytest

from moorage.meta.errors import MissingReferences
from moorage.meta.protocols import MetadataStore
from moorage.model import Reference
from tests.meta.conftest import Opener
from tests.meta.helpers import ACTOR, digest, manifest


async def test_put_manifest_requires_references(meta: MetadataStore) -> None:
    config, layer = digest("config"), digest("layer")
    await meta.add_blob("repo", config, 10)
    record = manifest("m", Reference("blob", config), Reference("blob", layer))
    with pytest.raises(MissingReferences) as info:
        await meta.put_manifest("repo", record, "v1", ACTOR)
    assert info.value.missing == (Reference("blob", layer),)
    assert await meta.get_manifest("repo", record.digest) is None
    assert await meta.list_tags("repo", None, None) == []
    await meta.add_blob("repo", layer, 20)
    result = await meta.put_manifest("repo", record, "v1", ACTOR)
    assert result.previous_digest is None
    stored = await meta.resolve_tag("repo", "v1")
    assert stored is not None
    assert stored.payload == record.payload
    assert stored.media_type == record.media_type


async def test_index_requires_child_manifests(meta: MetadataStore) -> None:
    child = manifest("child")
    index = manifest("index", Reference("manifest", child.digest))
    with pytest.raises(MissingReferences):
        await meta.put_manifest("repo", index, (), ACTOR)
    await meta.put_manifest("repo", child, (), ACTOR)
    await meta.put_manifest("repo", index, "multi", ACTOR)
    resolved = await meta.resolve_tag("repo", "multi")
    assert resolved is not None and resolved.digest == index.digest


async def test_moving_a_tag_reports_previous_digest(meta: MetadataStore) -> None:
    first, second = manifest("one"), manifest("two")
    await meta.put_manifest("repo", first, "latest", ACTOR)
    result = await meta.put_manifest("repo", second, "latest", ACTOR)
    assert result.previous_digest == first.digest
    resolved = await meta.resolve_tag("repo", "latest")
    assert resolved is not None and resolved.digest == second.digest
    again = await meta.put_manifest("repo", second, "latest", ACTOR)
    assert again.previous_digest == second.digest


async def test_delete_manifest_removes_its_tags(meta: MetadataStore) -> None:
    record = manifest("gone")
    await meta.put_manifest("repo", record, "a", ACTOR)
    await meta.put_manifest("repo", record, "b", ACTOR)
    assert await meta.delete_manifest("repo", record.digest, ACTOR) is True
    assert await meta.get_manifest("repo", record.digest) is None
    assert await meta.resolve_tag("repo", "a") is None
    assert await meta.list_tags("repo", None, None) == []
    assert await meta.delete_manifest("repo", record.digest, ACTOR) is False
    assert await meta.delete_manifest("no-such-repo", record.digest, ACTOR) is False


async def test_delete_tag_keeps_manifest(meta: MetadataStore) -> None:
    record = manifest("kept")
    await meta.put_manifest("repo", record, "t", ACTOR)
    assert await meta.delete_tag("repo", "t", ACTOR) is True
    assert await meta.delete_tag("repo", "t", ACTOR) is False
    assert await meta.get_manifest("repo", record.digest) is not None


async def test_tags_and_repositories_are_listed_in_order(meta: MetadataStore) -> None:
    record = manifest("x")
    for tag in ["b", "a", "C", "c", "1.0", "latest"]:
        await meta.put_manifest("repo", record, tag, ACTOR)
    assert await meta.list_tags("repo", None, None) == ["1.0", "C", "a", "b", "c", "latest"]
    assert await meta.list_tags("repo", 2, None) == ["1.0", "C"]
    assert await meta.list_tags("repo", 2, "C") == ["a", "b"]
    assert await meta.list_tags("repo", None, "c") == ["latest"]
    assert await meta.list_tags("missing", None, None) == []
    assert await meta.repository_exists("repo")
    assert not await meta.repository_exists("missing")
    for name in ["z/z", "a/b", "m"]:
        await meta.add_blob(name, digest("b"), 1)
    assert await meta.list_repositories(None, None) == ["a/b", "m", "repo", "z/z"]
    assert await meta.list_repositories(2, "a/b") == ["m", "repo"]


async def test_referrers_filter_by_artifact_type(meta: MetadataStore) -> None:
    subject = manifest("subject")
    await meta.put_manifest("repo", subject, (), ACTOR)
    sig = manifest("sig", subject=subject.digest, artifact_type="application/vnd.example.sig")
    sbom = manifest("sbom", subject=subject.digest, artifact_type="application/vnd.example.sbom")
    await meta.put_manifest("repo", sig, (), ACTOR)
    await meta.put_manifest("repo", sbom, (), ACTOR)
    everything = await meta.referrers("repo", subject.digest, None)
    assert {r.digest for r in everything} == {sig.digest, sbom.digest}
    assert all(r.annotations == '{"k": "v"}' and r.size > 0 for r in everything)
    only = await meta.referrers("repo", subject.digest, "application/vnd.example.sbom")
    assert [r.digest for r in only] == [sbom.digest]
    assert await meta.referrers("repo", digest("none"), None) == []
    assert await meta.referrers("other", subject.digest, None) == []


async def test_handles_share_state(open_meta: Opener) -> None:
    """Two handles (as in two worker processes) see each other's writes at once."""
    first, second = open_meta(), open_meta()
    try:
        record = manifest("shared")
        await first.put_manifest("repo", record, "t", ACTOR)
        resolved = await second.resolve_tag("repo", "t")
        assert resolved is not None and resolved.digest == record.digest
        await second.delete_tag("repo", "t", ACTOR)
        assert await first.resolve_tag("repo", "t") is None
    finally:
        await first.close()
        await second.close()
