"""A collection report as people and programs read it (moorage.registry.collection_report)."""

from __future__ import annotations

from moorage.model import ExpiredTag, RepositorySweep, StoredManifest
from moorage.registry.collection_report import as_document, as_text
from moorage.registry.collector import CollectionReport

OLD = "sha256:" + "a" * 64
KEPT = "sha256:" + "b" * 64


def report(dry_run: bool) -> CollectionReport:
    expired = ExpiredTag("ci-1", OLD, "ci", "retention rule 'ci': pushed 9 d ago")
    sweep = RepositorySweep(
        "team/app",
        kept_manifests=(
            (StoredManifest(OLD, "m", 10, 0.0), ("tag team/app:ci-1 removed now",)),
            (StoredManifest(KEPT, "m", 20, 0.0), ("tag team/app:v1",)),
        ),
        tags=(expired,),
        spared_tags=(("v1", "retention rule 'ci' spares it: immutable (rule 'r')"),),
    )
    return CollectionReport(dry_run=dry_run, started=0.0, finished=1.0, repositories=[sweep])


def test_the_text_lists_the_tags_retention_removes_and_spares() -> None:
    text = as_text(report(dry_run=True), details=True).splitlines()
    assert text[1] == (
        "team/app: 1 tags, 0 manifests (0 B) and 0 blob links would be deleted; "
        "2 manifests and 0 blobs kept"
    )
    assert text[2] == (
        "  delete tag      ci-1 (sha256:aaaaaaaaaaaa): retention rule 'ci': pushed 9 d ago"
    )
    assert text[3] == "  keep tag        v1: retention rule 'ci' spares it: immutable (rule 'r')"
    assert text[-1].startswith("total: 1 tags, 0 manifests, 0 blob links")
    summary = as_text(report(dry_run=False), details=False).splitlines()
    assert summary[1].startswith("team/app: 1 tags, 0 manifests (0 B) and 0 blob links deleted")


def test_the_document_names_each_tag_with_its_rule() -> None:
    document = as_document(report(dry_run=False))
    assert document["tags_deleted"] == 1
    (repository,) = document["repositories"]
    assert repository["deleted_tags"] == [
        {
            "tag": "ci-1",
            "digest": OLD,
            "rule": "ci",
            "reason": "retention rule 'ci': pushed 9 d ago",
        }
    ]
    assert repository["spared_tags"] == [
        {"tag": "v1", "reason": "retention rule 'ci' spares it: immutable (rule 'r')"}
    ]
    (counted,) = as_document(report(dry_run=False), details=False)["repositories"]
    assert (counted["deleted_tags"], counted["spared_tags"]) == (1, 1)
