"""Retention rules (moorage.registry.retention): reading them, and which tags they remove."""

from __future__ import annotations

from typing import Any

import pytest

from moorage.config import Settings
from moorage.documents import DocumentError, read
from moorage.policy import Policy
from moorage.registry.retention import Retention

NOW = 1_000_000_000.0
DAY = 86400.0


def retention(*rules: dict[str, Any], policy: Policy | None = None) -> Retention:
    settings = read(Settings, {"gc": {"retention": list(rules)}}, "test")
    return Retention.from_documents(settings.gc.retention, policy or Policy(), 0)


def expire(
    rules: Retention,
    tags: dict[str, tuple[str, float]],
    *,
    pulls: dict[str, float] | None = None,
    protected: dict[str, str] | None = None,
    repository: str = "team/app",
) -> tuple[list[str], list[tuple[str, str]]]:
    """The tags removed and spared; ``tags``: name -> (digest, days since it was pushed)."""
    expired, spared = rules.expire(
        repository,
        [(tag, digest) for tag, (digest, _) in tags.items()],
        {tag: NOW - days * DAY for tag, (_, days) in tags.items()},
        pulls or {},
        protected or {},
        NOW,
    )
    return [e.tag for e in expired], spared


def test_keep_last_counts_the_newest_pushes_of_the_tags_the_rule_matches() -> None:
    rules = retention({"name": "ci", "tags": "ci-*", "keep_last": 2})
    tags = {f"ci-{n}": (f"sha256:{n}", float(n)) for n in range(1, 6)}
    tags["latest"] = ("sha256:old", 100.0)  # not matched: never judged
    assert expire(rules, tags) == (["ci-3", "ci-4", "ci-5"], [])


def test_the_reason_names_the_rule_and_what_failed() -> None:
    rules = retention({"name": "ci", "keep_last": 1, "keep_pulled_within": 7 * DAY})
    expired, _ = rules.expire(
        "team/app",
        [("a", "sha256:a"), ("b", "sha256:b"), ("c", "sha256:c")],
        {"a": NOW - DAY, "b": NOW - 3 * DAY, "c": NOW - 40 * DAY},
        {"sha256:b": NOW - 10 * DAY},
        {},
        NOW,
    )
    assert [(e.tag, e.digest, e.rule) for e in expired] == [
        ("b", "sha256:b", "ci"),
        ("c", "sha256:c", "ci"),
    ]
    assert expired[0].reason == (
        "retention rule 'ci': not among its 1 most recently pushed (#2), pushed 3 d ago, "
        "pulled 10 d ago"
    )
    assert expired[1].reason.endswith("(#3), pushed 40 d ago, never pulled")


def test_pushed_or_pulled_within_a_period_keeps_a_tag() -> None:
    rules = retention(
        {"name": "recent", "keep_pushed_within": 7 * DAY, "keep_pulled_within": 30 * DAY}
    )
    tags = {
        "new": ("sha256:new", 2.0),
        "pulled": ("sha256:pulled", 60.0),
        "old": ("sha256:old", 60.0),
        "pulled-long-ago": ("sha256:stale", 60.0),
    }
    pulls = {"sha256:pulled": NOW - 29 * DAY, "sha256:stale": NOW - 31 * DAY}
    assert expire(rules, tags, pulls=pulls) == (["old", "pulled-long-ago"], [])


def test_a_pull_of_the_digest_keeps_every_tag_pointing_at_it() -> None:
    rules = retention({"name": "pulled", "keep_pulled_within": DAY})
    tags = {"a": ("sha256:same", 9.0), "b": ("sha256:same", 9.0), "c": ("sha256:other", 9.0)}
    assert expire(rules, tags, pulls={"sha256:same": NOW - 60}) == (["c"], [])


def test_the_first_matching_rule_judges_and_except_tags_escape_it() -> None:
    rules = retention(
        {"name": "keep-releases", "tags": "regex:v[0-9.]+", "keep_last": 100},
        {"name": "rest", "except_tags": ["latest", "main"], "keep_last": 0},
        {"name": "other-repos", "repositories": "other/**", "keep_last": 0},
    )
    tags = {
        "v1.0": ("sha256:1", 50.0),
        "v2.0": ("sha256:2", 40.0),
        "latest": ("sha256:3", 30.0),
        "main": ("sha256:4", 30.0),
        "feature-x": ("sha256:5", 1.0),
    }
    assert expire(rules, tags) == (["feature-x"], [])
    assert expire(rules, {"anything": ("sha256:6", 0.0)}, repository="other/x") == (
        ["anything"],
        [],
    )


def test_immutable_tags_and_images_in_use_are_spared() -> None:
    policy = Policy.from_dict({"rules": [{"name": "releases", "tags": "v*", "mode": "immutable"}]})
    rules = retention({"name": "none", "keep_last": 0}, policy=policy)
    tags = {
        "v1": ("sha256:release", 9.0),
        "web": ("sha256:running", 9.0),
        "gone": ("sha256:gone", 9.0),
    }
    assert expire(rules, tags, protected={"sha256:running": "running in prod/Pod/web"}) == (
        ["gone"],
        [
            ("v1", "retention rule 'none' spares it: immutable (rule 'releases')"),
            ("web", "retention rule 'none' spares it: running in prod/Pod/web"),
        ],
    )


def test_untagged_after_of_the_first_rule_covering_the_repository() -> None:
    rules = retention(
        {"name": "tags-only", "repositories": "ci/**", "keep_last": 5},
        {"name": "ci", "repositories": "ci/**", "untagged_after": 60},
        {"name": "all", "untagged_after": 3600},
    )
    assert rules.untagged_after("ci/app", 99.0) == (60, "ci")
    assert rules.untagged_after("team/app", 99.0) == (3600, "all")
    assert retention().untagged_after("team/app", None) == (None, None)
    assert rules.longest_untagged == 3600
    assert rules.judges("ci/app") and not rules.judges("team/app")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"name": "empty", "tags": "*"}],
            "test: gc.retention: retention rule 'empty': a retention rule needs keep_last, "
            "keep_pushed_within, keep_pulled_within or untagged_after",
        ),
        (
            [{"name": "a", "keep_last": 1}, {"name": "a", "keep_last": 2}],
            "test: gc.retention: rule names must be unique: a",
        ),
        (
            [{"name": "neg", "keep_last": -1}],
            "test: gc.retention: retention rule 'neg': keep_last: must be at least 0, not -1",
        ),
        (
            [{"name": "bad", "tags": "regex:(", "keep_last": 1}],
            "test: gc.retention: retention rule 'bad': tags: invalid pattern 'regex:(': "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            [{"name": "typo", "keep_lats": 1}],
            "test: gc.retention: retention rule 'typo': keep_lats: unknown key; did you mean "
            "'keep_last'?",
        ),
    ],
)
def test_rules_that_cannot_be_used_are_refused(rules: list[Any], message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        read(Settings, {"gc": {"retention": rules}}, "test")
    assert str(caught.value).startswith(message)
