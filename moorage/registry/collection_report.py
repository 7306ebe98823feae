"""A garbage collection run as people read it (``moorage gc``) and as JSON (``--json``, the
admin API): what went (or would go) with its bytes, and why everything else is kept."""

from __future__ import annotations

from typing import Any

from moorage.model import BlobDeletion, RepositorySweep
from moorage.registry.collection import short
from moorage.registry.collector import CollectionReport
from moorage.sizes import human_size
from moorage.times import format_time


def _deletion(deletion: BlobDeletion) -> dict[str, Any]:
    return {
        "digest": deletion.digest,
        "size": deletion.size,
        "since": format_time(deletion.since),
        "reason": deletion.reason,
    }


def _repository(sweep: RepositorySweep, details: bool) -> dict[str, Any]:
    if not details:
        return {
            "name": sweep.repository,
            "deleted_tags": len(sweep.tags),
            "spared_tags": len(sweep.spared_tags),
            "deleted_manifests": len(sweep.manifests),
            "deleted_manifest_bytes": sum(m.size for m in sweep.manifests),
            "unlinked_blobs": len(sweep.blobs),
            "kept_manifests": len(sweep.kept_manifests),
            "kept_blobs": len(sweep.kept_blobs),
        }
    return {
        "name": sweep.repository,
        "deleted_tags": [
            {"tag": t.tag, "digest": t.digest, "rule": t.rule, "reason": t.reason}
            for t in sweep.tags
        ],
        "spared_tags": [{"tag": tag, "reason": reason} for tag, reason in sweep.spared_tags],
        "deleted_manifests": [
            {"digest": m.digest, "size": m.size, "pushed": format_time(m.created_at)}
            for m in sweep.manifests
        ],
        "unlinked_blobs": [{"digest": b.digest, "size": b.size} for b in sweep.blobs],
        "kept_manifests": [
            {"digest": m.digest, "size": m.size, "reasons": list(reasons)}
            for m, reasons in sweep.kept_manifests
        ],
        "kept_blobs": [
            {"digest": b.digest, "size": b.size, "reasons": list(reasons)}
            for b, reasons in sweep.kept_blobs
        ],
    }


def as_document(report: CollectionReport, *, details: bool = True) -> dict[str, Any]:
    """The report as JSON-ready data; without ``details``, counts instead of the lists of
    what each repository deleted and kept (and why), and of the blobs deleted."""
    return {
        "dry_run": report.dry_run,
        "started": format_time(report.started),
        "finished": format_time(report.finished),
        "seconds": round(report.finished - report.started, 3),
        "tags_deleted": report.tags_deleted,
        "manifests_deleted": report.manifests_deleted,
        "links_deleted": report.links_deleted,
        "bytes_freed": report.bytes_freed,
        "repositories": [_repository(sweep, details) for sweep in report.repositories],
        **{
            name: [_deletion(d) for d in deletions]
            if details
            else {"count": len(deletions), "bytes": sum(d.size for d in deletions)}
            for name, deletions in (
                ("retired", report.retired),
                ("orphaned", report.orphaned),
                ("deleted", report.deleted),
                ("waiting", report.waiting),
            )
        },
        "upload_data": [{"key": o.key, "size": o.size} for o in report.upload_data],
        "storage": None
        if report.storage is None
        else {
            "items": report.storage.items,
            "bytes": report.storage.bytes,
            "lines": list(report.storage.lines),
        },
    }


def _sum(deletions: list[BlobDeletion]) -> str:
    return f"{len(deletions)} ({human_size(sum(d.size for d in deletions))})"


def as_text(report: CollectionReport, *, details: bool) -> str:
    """The report for people: a summary, and with ``details`` every item and reason."""
    would = "would be " if report.dry_run else ""
    lines = [
        f"garbage collection{' (dry run: nothing changed)' if report.dry_run else ''}, "
        f"{format_time(report.started)}, {report.finished - report.started:.1f} s",
    ]
    for sweep in report.repositories:
        freed = sum(m.size for m in sweep.manifests)
        if sweep.manifests or sweep.blobs or sweep.tags or details:
            tags = f"{len(sweep.tags)} tags, " if sweep.tags else ""
            lines.append(
                f"{sweep.repository}: {tags}{len(sweep.manifests)} manifests "
                f"({human_size(freed)}) and {len(sweep.blobs)} blob links {would}deleted; "
                f"{len(sweep.kept_manifests)} manifests and {len(sweep.kept_blobs)} blobs kept"
            )
        if not details:
            continue
        for expired in sweep.tags:
            lines.append(
                f"  delete tag      {expired.tag} ({short(expired.digest)}): {expired.reason}"
            )
        for tag, reason in sweep.spared_tags:
            lines.append(f"  keep tag        {tag}: {reason}")
        for manifest in sweep.manifests:
            lines.append(f"  delete manifest {manifest.digest} ({human_size(manifest.size)})")
        for blob in sweep.blobs:
            lines.append(f"  unlink blob     {blob.digest} ({human_size(blob.size)})")
        for manifest, reasons in sweep.kept_manifests:
            lines.append(f"  keep manifest   {short(manifest.digest)}: {'; '.join(reasons)}")
        for blob, reasons in sweep.kept_blobs:
            why = "; ".join(reasons)
            lines.append(f"  keep blob       {short(blob.digest)} ({human_size(blob.size)}): {why}")
    lines.append(f"blobs no repository holds any more: {_sum(report.retired)}")
    lines.append(f"stored bytes no record names: {_sum(report.orphaned)}")
    lines.append(
        f"upload data of no session {would}deleted: {len(report.upload_data)} "
        f"({human_size(sum(o.size for o in report.upload_data))})"
    )
    lines.append(f"blob bytes {would}deleted: {_sum(report.deleted)}")
    if report.waiting:
        lines.append(
            f"blob bytes waiting for the grace period (deleted by a later run): "
            f"{_sum(report.waiting)}"
        )
    if details:
        for deletion in report.deleted:
            lines.append(
                f"  delete bytes {deletion.digest} ({human_size(deletion.size)}): {deletion.reason}"
            )
    if report.storage is not None:
        lines.extend(f"storage: {line}" for line in report.storage.lines)
    lines.append(
        f"total: {report.tags_deleted} tags, {report.manifests_deleted} manifests, "
        f"{report.links_deleted} blob links, "
        f"{human_size(report.bytes_freed)} of storage {would}freed"
    )
    return "\n".join(lines)
