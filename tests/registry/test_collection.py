"""What garbage collection keeps, and why (moorage.registry.collection): the planner alone."""

from __future__ import annotations

from moorage.model import (
    HistoryTarget,
    LinkedBlob,
    PinRecord,
    Reference,
    RepositoryContents,
    RunningImage,
    StoredManifest,
)
from moorage.registry.collection import Windows, plan, short
from moorage.times import ago

NOW = 1_000_000.0
HOUR = 3600.0
DAY = 86400.0
WINDOWS = Windows(now=NOW, grace=HOUR, untagged_after=DAY, pins=7 * DAY, history=7 * DAY)
OLD = NOW - 30 * DAY


def d(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")[:64]


def image(
    name: str, *blobs: str, created: float = OLD, subject: str | None = None
) -> StoredManifest:
    return StoredManifest(
        d(name), "application/vnd.oci.image.manifest.v1+json", 100, created, subject,
        tuple(Reference("blob", d(b)) for b in blobs),
    )  # fmt: skip


def index(name: str, *children: str, created: float = OLD) -> StoredManifest:
    return StoredManifest(
        d(name), "application/vnd.oci.image.index.v1+json", 50, created, None,
        tuple(Reference("manifest", d(c)) for c in children),
    )  # fmt: skip


def blobs(*names: str, linked: float = OLD) -> tuple[LinkedBlob, ...]:
    return tuple(LinkedBlob(d(n), 1000, linked) for n in names)


def contents(
    *manifests: StoredManifest, tags: dict[str, str] | None = None, **extra: object
) -> RepositoryContents:
    return RepositoryContents(
        repository="team/app",
        manifests=manifests,
        tags=tuple((t, d(m)) for t, m in (tags or {}).items()),
        blobs=extra.pop("linked", ()),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def kept(
    sweep_contents: RepositoryContents, windows: Windows = WINDOWS
) -> dict[str, tuple[str, ...]]:
    sweep = plan(sweep_contents, windows)
    reasons = {m.digest: r for m, r in sweep.kept_manifests}
    reasons.update({b.digest: r for b, r in sweep.kept_blobs})
    return reasons


def test_a_tag_keeps_its_image_and_everything_it_needs() -> None:
    found = contents(
        index("idx", "amd64", "arm64"),
        image("amd64", "config", "layer"),
        image("arm64", "config", "layer2"),
        image("stale", "layer3"),
        tags={"1.4": "idx"},
        linked=blobs("config", "layer", "layer2", "layer3"),
    )
    sweep = plan(found, WINDOWS)
    assert [m.digest for m in sweep.manifests] == [d("stale")]
    assert [b.digest for b in sweep.blobs] == [d("layer3")]
    reasons = kept(found)
    assert reasons[d("idx")] == ("tag team/app:1.4",)
    assert reasons[d("amd64")] == (f"in index {short(d('idx'))}",)
    assert reasons[d("layer")] == (f"used by {short(d('amd64'))}",)


def test_referrers_of_kept_manifests_are_kept_and_theirs() -> None:
    found = contents(
        image("app", "layer"),
        image("signature", "sig", subject=d("app")),
        image("sbom-signature", "sig2", subject=d("signature")),
        image("dangling", "x", subject=d("gone")),
        tags={"v1": "app"},
        linked=blobs("layer", "sig", "sig2", "x"),
    )
    reasons = kept(found)
    assert reasons[d("signature")] == (f"refers to {short(d('app'))}",)
    assert reasons[d("sbom-signature")] == (f"refers to {short(d('signature'))}",)
    assert d("sig2") in reasons
    assert d("dangling") not in reasons


def test_what_runs_what_was_pinned_and_what_a_tag_pointed_at_are_kept() -> None:
    running = RunningImage("prod", "Pod", "web-1", "app", "img", "team/app", None, d("running"))
    by_tag = RunningImage("prod", "Job", "batch", "app", "img", "team/app", "v2", None)
    pinned = PinRecord(
        NOW - 2 * HOUR, "prod", "Deployment", "web", "container", "app", "img", "h/team/app",
        "v1", d("pinned"), "local", "uid", "alice",
    )  # fmt: skip
    stale_pin = PinRecord(
        NOW - 8 * DAY, "prod", "Deployment", "web", "container", "app", "img", "h/team/app",
        "v1", d("old-pin"), "local", "uid", "alice",
    )  # fmt: skip
    found = contents(
        image("running"),
        image("v2"),
        image("pinned"),
        image("old-pin"),
        image("moved-away"),
        image("long-ago"),
        tags={"v2": "v2"},
        running=(running, by_tag),
        pins=(pinned, stale_pin),
        history=(
            HistoryTarget("v1", d("moved-away"), NOW - 3 * DAY),
            HistoryTarget("v0", d("long-ago"), NOW - 9 * DAY),
        ),
    )
    reasons = kept(found, Windows(NOW, HOUR, None, 7 * DAY, 7 * DAY))
    assert reasons[d("running")][0] == "running in prod/Pod/web-1"
    assert reasons[d("v2")] == ("tag team/app:v2", "running in prod/Job/batch as :v2")
    assert reasons[d("pinned")][0] == "pinned 2 h ago in prod/Deployment/web"
    assert reasons[d("moved-away")][0] == "tag team/app:v1 pointed at it 3 d ago (restorable)"
    # untagged_after None keeps every untagged manifest; with a limit, these two go.
    assert reasons[d("old-pin")] == ("untagged manifests are kept (gc.keep_untagged)",)
    gone = {m.digest for m in plan(found, WINDOWS).manifests}
    assert gone == {d("old-pin"), d("long-ago")}


def test_young_manifests_and_links_are_kept_for_the_push_under_way() -> None:
    found = contents(
        image("new", "layer", created=NOW - 60),
        linked=blobs("layer", linked=OLD) + blobs("fresh", linked=NOW - 120),
    )
    reasons = kept(found)
    assert reasons[d("new")] == ("pushed 60 s ago",)
    assert reasons[d("layer")] == (f"used by {short(d('new'))}",)
    assert reasons[d("fresh")] == ("uploaded 2 min ago",)


def test_untagged_is_counted_from_when_the_tag_moved_away() -> None:
    found = contents(
        image("recently-untagged", created=OLD),
        image("never-tagged", created=OLD),
        history=(HistoryTarget("latest", d("recently-untagged"), NOW - 3 * HOUR),),
    )
    windows = Windows(NOW, HOUR, untagged_after=DAY, pins=DAY, history=HOUR)
    reasons = kept(found, windows)
    assert reasons[d("recently-untagged")] == ("untagged for 3 h, less than gc.untagged_after",)
    assert d("never-tagged") not in reasons
    assert windows.history_since == NOW - DAY


def test_ages_read_well() -> None:
    assert [ago(s) for s in (5, 300, 3 * HOUR, 3 * DAY, -1)] == [
        "5 s",
        "5 min",
        "3 h",
        "3 d",
        "0 s",
    ]
