"""Retention rules applied by garbage collection (moorage.registry.collector with
``[[gc.retention]]``) on a real registry, pushed to and pulled from over HTTP: every storage
driver with SQLite, and the filesystem and S3 with PostgreSQL.

The registry's clock moves instead of the tests waiting.
"""

from __future__ import annotations

from typing import Any

import pytest

from moorage.model import RunningImage
from moorage.times import parse_time
from tests.support.app import (
    RegistryEnv,
    assert_image_intact,
    get_manifest,
    history,
    install,
    push_seeded,
)
from tests.support.collecting import COMBINATIONS, GRACE, UNTAGGED, WINDOW, MakeGcEnv, collect

HOUR = 3600.0
RULES: list[dict[str, Any]] = [
    {
        "name": "ci",
        "repositories": "team/**",
        "except_tags": "latest",
        "keep_last": 1,
        "keep_pulled_within": 10 * HOUR,
    }
]
POLICY: dict[str, Any] = {
    "rules": [{"name": "releases", "tags": "regex:v[0-9.]+", "mode": "immutable"}]
}


@pytest.fixture(params=COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
async def gc_env(request: pytest.FixtureRequest, make_gc_env: MakeGcEnv) -> RegistryEnv:
    env: RegistryEnv = await make_gc_env(*request.param, retention=RULES)
    return env


async def tags_of(env: RegistryEnv, name: str) -> list[str]:
    resp = await env.client.get(f"/v2/{name}/tags/list")
    assert resp.status == 200
    body = await resp.json()
    return sorted(body["tags"] or [])


async def test_retention_removes_tags_with_their_rule_and_spares_what_it_must(
    gc_env: RegistryEnv,
) -> None:
    env, client = gc_env, gc_env.client
    await install(client, POLICY)
    images = {}
    for tag in ("v1.0", "old", "running", "pulled", "latest", "newest"):
        images[tag] = await push_seeded(client, "team/app", tag, tag)
        env.clock.advance(60)
    other = await push_seeded(client, "other/app", "old", "other")
    env.clock.advance(20 * HOUR)
    resp, _ = await get_manifest(client, "team/app", "pulled")
    assert resp.status == 200
    await env.registry.usage.flush()
    await env.registry.meta.replace_inventory(
        [RunningImage("prod", "Pod", "web-1", "app", "i", "team/app", "running", None)],
        env.clock.now,
    )

    dry = await collect(env, dry_run=True)
    (sweep,) = [s for s in dry.repositories if s.repository == "team/app"]
    assert [(t.tag, t.digest, t.rule) for t in sweep.tags] == [("old", images["old"].digest, "ci")]
    assert sweep.tags[0].reason == (
        "retention rule 'ci': not among its 1 most recently pushed (#4), pushed 20 h ago, "
        "never pulled"
    )
    assert dict(sweep.spared_tags) == {
        "running": "retention rule 'ci' spares it: running in prod/Pod/web-1 as :running",
        "v1.0": "retention rule 'ci' spares it: immutable (rule 'releases')",
    }
    assert "old" in await tags_of(env, "team/app")  # a dry run changes nothing

    report = await collect(env)
    assert report.tags_deleted == 1
    assert await tags_of(env, "team/app") == ["latest", "newest", "pulled", "running", "v1.0"]
    assert await tags_of(env, "other/app") == ["old"]  # no rule covers it
    (event, *_) = await history(client, "team/app", "old")
    assert (event["action"], event["old_digest"], event["rule"]) == (
        "deleted",
        images["old"].digest,
        "ci",
    )
    assert event["reason"] == report.repositories[1].tags[0].reason
    assert event["address"] == "gc"
    event_at = parse_time(event["time"])
    # Its manifest stays restorable for the history window, then goes.
    (kept,) = [s for s in report.repositories if s.repository == "team/app"]
    reasons = dict((m.digest, why) for m, why in kept.kept_manifests)
    assert reasons[images["old"].digest][0] == (
        "tag team/app:old removed now by retention (restorable)"
    )
    await assert_image_intact(client, "team/app", images["old"])
    for tag, image in images.items():
        if tag != "old":
            await assert_image_intact(client, "team/app", image, [tag])
    await assert_image_intact(client, "other/app", other, ["old"])

    env.clock.advance(max(WINDOW, UNTAGGED, 10 * HOUR) + GRACE + 1)
    report = await collect(env)
    gone = {m.digest for s in report.repositories for m in s.manifests}
    assert gone == {images["old"].digest}
    # Which tags pointed at the collected manifest is still known.
    (span,) = await env.registry.history.tags_for(images["old"].digest)
    assert (span.repository, span.tag) == ("team/app", "old")
    assert span.until == pytest.approx(event_at, abs=0.001)
    # The pull is now older than keep_pulled_within; running and immutable tags stay.
    assert {t.tag for s in report.repositories for t in s.tags} == {"pulled"}
    assert await tags_of(env, "team/app") == ["latest", "newest", "running", "v1.0"]


async def test_untagged_after_of_a_rule_overrides_the_setting(make_gc_env: MakeGcEnv) -> None:
    env = await make_gc_env(
        "filesystem",
        "sqlite",
        untagged_after=10 * WINDOW,
        retention=[{"name": "fast", "repositories": "ci/**", "untagged_after": GRACE}],
    )
    client = env.client
    ci = await push_seeded(client, "ci/app", "x", "ci")
    team = await push_seeded(client, "team/app", "x", "team")
    await push_seeded(client, "ci/app", "x", "ci-next")
    await push_seeded(client, "team/app", "x", "team-next")
    env.clock.advance(GRACE + 1)
    report = await collect(env)
    gone = {m.digest for s in report.repositories for m in s.manifests}
    assert ci.digest not in gone  # the tag history keeps it restorable
    env.clock.advance(WINDOW)
    report = await collect(env)
    gone = {m.digest for s in report.repositories for m in s.manifests}
    assert gone == {ci.digest}  # team/app's waits for gc.untagged_after
    (sweep,) = [s for s in report.repositories if s.repository == "ci/app"]
    assert sweep.manifests[0].digest == ci.digest
    (sweep,) = [s for s in report.repositories if s.repository == "team/app"]
    (why,) = [why for m, why in sweep.kept_manifests if m.digest == team.digest]
    assert why[0].endswith("less than gc.untagged_after")


async def test_a_policy_change_during_a_collection_is_obeyed(gc_env: RegistryEnv) -> None:
    """A tag made immutable after the collector read the policy is not removed: the store
    reads the policy version in the sweep's transaction, and the collector judges again."""
    env, client = gc_env, gc_env.client
    for name in ("team/a", "team/b"):
        await push_seeded(client, name, "build-1", f"{name}-1")
        env.clock.advance(60)
        await push_seeded(client, name, "build-2", f"{name}-2")
    env.clock.advance(20 * HOUR)

    async def pause(step: str) -> None:
        if step == "repository":
            await install(client, {"rules": [{"name": "freeze", "tags": "*",
                                               "mode": "immutable"}]})  # fmt: skip

    collector = env.registry.collector(hosts=["registry.example"], pause=pause)
    report = await collector.run()
    a, b = report.repositories
    assert [t.tag for t in a.tags] == ["build-1"]  # judged before the change
    assert b.tags == ()
    assert b.spared_tags == (
        ("build-1", "retention rule 'ci' spares it: immutable (rule 'freeze')"),
    )
    assert await tags_of(env, "team/a") == ["build-2"]
    assert await tags_of(env, "team/b") == ["build-1", "build-2"]
