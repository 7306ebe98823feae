"""Records and guards for the metadata suites."""

from __future__ import annotations

import hashlib

from moorage.meta.protocols import MetadataStore
from moorage.model import Actor, ManifestRecord, Reference, Refusal, TagGuard, Upload

ACTOR = Actor("tester", "127.0.0.1", "request-1")
ALICE = Actor("alice", "10.0.0.7", "req-alice")


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def manifest(
    seed: str, *refs: Reference, subject: str | None = None, artifact_type: str | None = None
) -> ManifestRecord:
    payload = f'{{"seed": "{seed}"}}'.encode()
    return ManifestRecord(
        digest="sha256:" + hashlib.sha256(payload).hexdigest(),
        media_type="application/vnd.oci.image.manifest.v1+json",
        payload=payload,
        artifact_type=artifact_type,
        subject=subject,
        annotations='{"k": "v"}' if subject else None,
        references=refs,
    )


def new_upload(
    upload_id: str = "6f1c3c6e-0000-4000-8000-000000000001", repo: str = "repo"
) -> Upload:
    return Upload(upload_id, repo, 0, b"state", 100.0, 100.0)


def freeze(*tags: str) -> TagGuard:
    """A guard that refuses moving or deleting ``tags`` once they exist."""

    def guard(tag: str, current: str | None, new: str | None) -> Refusal | None:
        if tag in tags and current is not None and current != new:
            return Refusal("repo", tag, current, new, "frozen", f"{tag} is frozen")
        return None

    return TagGuard(guard)


def stamped(version: int) -> TagGuard:
    """A guard that allows every change, enforcing the stored policy of ``version``."""
    return TagGuard(lambda tag, current, new: None, version)


async def tagged(meta: MetadataStore, tag: str) -> str | None:
    """Where ``repo:tag`` points."""
    record = await meta.resolve_tag("repo", tag)
    return None if record is None else record.digest


async def changes(meta: MetadataStore, tag: str) -> list[tuple[str, str | None, str | None]]:
    """The history of ``repo:tag``, newest first: (action, old digest, new digest)."""
    events = await meta.tag_history("repo", tag, None, None)
    return [(e.action, e.old_digest, e.new_digest) for e in events]
