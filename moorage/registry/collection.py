"""What garbage collection keeps in a repository, and why: the live set, decided from what the
metadata store read of the repository (``RepositoryContents``). Pure: no I/O, no clock.

Kept, each with the reasons shown by ``moorage gc --dry-run``:

- every manifest a tag points at, and everything reachable from it: the children of an
  index, and the config and layers of every kept manifest;
- the referrers of kept manifests (signatures, SBOMs, attestations), and theirs;
- digests the cluster uses now (the inventory), pinned by the admission webhook within the
  pins window, or that a tag pointed at within the history window (so that ``moorage tags
  restore`` keeps working);
- manifests and blob links younger than the grace period: a push under way uploads layers
  before the manifest that needs them, and children before their index;
- untagged manifests until they have been untagged for ``untagged_after`` (never, if None),
  or for the ``untagged_after`` of the retention rule covering the repository.

Retention rules (``moorage.registry.retention``) first remove tags; what those tags pointed
at is kept as restorable this time, and goes later as untagged.

Everything else in the repository is garbage: the manifests, and the links to blobs no kept
manifest uses. The store deletes them in the transaction that read the contents.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from moorage.meta.errors import PolicyChanged
from moorage.model import ExpiredTag, RepositoryContents, RepositorySweep, StoredManifest
from moorage.registry.retention import Retention
from moorage.times import ago

#: Reasons kept per item, at most (the first is the most telling).
MAX_REASONS = 3


@dataclass(frozen=True, slots=True)
class Windows:
    """The times that decide what is young enough to keep, in seconds before ``now``."""

    now: float
    #: Manifests pushed and blobs linked this recently are kept.
    grace: float
    #: Untagged manifests are kept until untagged this long (None: kept forever).
    untagged_after: float | None
    #: Digests pinned by the admission webhook this recently are kept.
    pins: float
    #: Digests a tag pointed at this recently are kept.
    history: float

    @property
    def history_since(self) -> float:
        """From when the tag history matters (to keep, or to date an untagging)."""
        return self.now - max(self.history, self.untagged_after or 0.0)


def short(digest: str) -> str:
    """``sha256:0123456789ab``: enough of a digest to tell it in a listing."""
    return digest[: digest.find(":") + 13] if ":" in digest else digest[:19]


class _Reasons:
    """Reasons to keep digests, in the order they were found."""

    def __init__(self) -> None:
        self.by_digest: dict[str, list[str]] = defaultdict(list)

    def add(self, digest: str, reason: str) -> bool:
        """Add a reason; True if the digest was not kept before."""
        reasons = self.by_digest[digest]
        new = not reasons
        if len(reasons) < MAX_REASONS and reason not in reasons:
            reasons.append(reason)
        return new

    def __contains__(self, digest: object) -> bool:
        return bool(self.by_digest.get(digest))  # type: ignore[call-overload]


def _in_use(
    contents: RepositoryContents, windows: Windows, tags: dict[str, str]
) -> list[tuple[str, str]]:
    """(digest, why) for each image of the repository the cluster uses: running now (by
    digest, or by one of ``tags``), or pinned by the admission webhook within the pins
    window."""
    now = windows.now
    uses: list[tuple[str, str]] = []
    for image in contents.running:
        where = f"running in {image.namespace}/{image.kind}/{image.name}"
        if image.digest is not None:
            uses.append((image.digest, where))
        elif image.tag is not None and image.tag in tags:
            uses.append((tags[image.tag], f"{where} as :{image.tag}"))
    for pin in contents.pins:
        if pin.at >= now - windows.pins:
            uses.append(
                (
                    pin.digest,
                    f"pinned {ago(now - pin.at)} ago in {pin.namespace}/{pin.kind}/{pin.name}",
                )
            )
    return uses


def plan(
    contents: RepositoryContents, windows: Windows, retention: Retention | None = None
) -> RepositorySweep:
    """Decide what of the repository is garbage; everything kept comes with its reasons.

    With ``retention``, its rules first remove tags (``PolicyChanged`` if the tag policy they
    obey is not the one the store read in force).
    """
    now, name = windows.now, contents.repository
    manifests = {m.digest: m for m in contents.manifests}
    tags = dict(contents.tags)
    uses = _in_use(contents, windows, tags)
    expired: list[ExpiredTag] = []
    spared: list[tuple[str, str]] = []
    untagged_after, untagged_rule = windows.untagged_after, None
    if retention is not None:
        untagged_after, untagged_rule = retention.untagged_after(name, untagged_after)
        if retention.judges(name):
            if contents.policy_version != retention.policy_version:
                raise PolicyChanged(retention.policy_version, contents.policy_version)
            protected: dict[str, str] = {}
            for digest, why in uses:
                protected.setdefault(digest, why)
            expired, spared = retention.expire(
                name, contents.tags, dict(contents.tagged_at), dict(contents.last_pulls),
                protected, now,
            )  # fmt: skip
            for gone in expired:
                del tags[gone.tag]
    tagged = set(tags.values())
    kept = _Reasons()

    for tag, digest in sorted(tags.items()):
        kept.add(digest, f"tag {name}:{tag}")
    for gone in expired:
        kept.add(gone.digest, f"tag {name}:{gone.tag} removed now by retention (restorable)")
    for digest, why in uses:
        kept.add(digest, why)
    last_tagged: dict[str, float] = {}
    for event in contents.history:
        last_tagged[event.digest] = max(last_tagged.get(event.digest, 0.0), event.at)
        if event.at >= now - windows.history and event.digest not in tagged:
            kept.add(
                event.digest,
                f"tag {name}:{event.tag} pointed at it {ago(now - event.at)} ago (restorable)",
            )
    for manifest in contents.manifests:
        if manifest.created_at >= now - windows.grace:
            kept.add(manifest.digest, f"pushed {ago(now - manifest.created_at)} ago")
        elif manifest.digest in tagged:
            continue
        elif untagged_after is None:
            kept.add(manifest.digest, "untagged manifests are kept (gc.keep_untagged)")
        else:
            since = max(manifest.created_at, last_tagged.get(manifest.digest, 0.0))
            if since >= now - untagged_after:
                limit = (
                    "gc.untagged_after"
                    if untagged_rule is None
                    else f"untagged_after of retention rule {untagged_rule!r}"
                )
                kept.add(manifest.digest, f"untagged for {ago(now - since)}, less than {limit}")

    kept_blobs = _Reasons()
    referrers: dict[str, list[StoredManifest]] = defaultdict(list)
    for manifest in contents.manifests:
        if manifest.subject is not None:
            referrers[manifest.subject].append(manifest)
    queue = [digest for digest in list(kept.by_digest) if digest in manifests]
    while queue:
        manifest = manifests[queue.pop()]
        for reference in manifest.references:
            if reference.kind == "blob":
                kept_blobs.add(reference.digest, f"used by {short(manifest.digest)}")
            elif (
                kept.add(reference.digest, f"in index {short(manifest.digest)}")
                and reference.digest in manifests
            ):
                queue.append(reference.digest)
        for referrer in referrers.get(manifest.digest, ()):
            if kept.add(referrer.digest, f"refers to {short(manifest.digest)}"):
                queue.append(referrer.digest)
    for blob in contents.blobs:
        if blob.digest not in kept_blobs and blob.linked_at >= now - windows.grace:
            kept_blobs.add(blob.digest, f"uploaded {ago(now - blob.linked_at)} ago")

    return RepositorySweep(
        repository=name,
        manifests=tuple(m for m in contents.manifests if m.digest not in kept),
        blobs=tuple(b for b in contents.blobs if b.digest not in kept_blobs),
        kept_manifests=tuple(
            (m, tuple(kept.by_digest[m.digest])) for m in contents.manifests if m.digest in kept
        ),
        kept_blobs=tuple(
            (b, tuple(kept_blobs.by_digest[b.digest]))
            for b in contents.blobs
            if b.digest in kept_blobs
        ),
        tags=tuple(expired),
        spared_tags=tuple(spared),
    )
