"""moorage.policy: rule shapes, first match wins, the default, and invalid documents."""

from __future__ import annotations

from typing import Any

import pytest

from moorage.policy import Policy, PolicyError

EXAMPLES: dict[str, Any] = {
    "default": "mutable",
    "rules": [
        {"name": "dev", "repositories": ["dev/**"], "mode": "mutable"},
        {
            "name": "versions",
            "tags": [
                "regex:v?[0-9]+(\\.[0-9]+)+(-[0-9A-Za-z.-]+)?",
                "regex:[0-9]{4}-[0-9]{2}-[0-9]{2}",
            ],
            "mode": "immutable",
        },
        {
            "name": "prod",
            "repositories": "prod/**",
            "tags": "*",
            "except_tags": ["latest"],
            "mode": "immutable",
        },
    ],
}


@pytest.mark.parametrize(
    ("repository", "tag", "mode", "rule"),
    [
        # "every tag that looks like a version is immutable everywhere"
        ("team/app", "v1.2.3", "immutable", "versions"),
        ("team/app", "1.2", "immutable", "versions"),
        ("team/app", "2018-05-12", "immutable", "versions"),
        ("a/b/c/d", "1.4.0-rc.1", "immutable", "versions"),
        ("team/app", "today", "mutable", None),
        ("team/app", "v1", "mutable", None),
        ("team/app", "2018-05", "mutable", None),
        # "in prod/* every tag except latest is immutable"
        ("prod/web", "today", "immutable", "prod"),
        ("prod/web/api", "main", "immutable", "prod"),
        ("prod/web", "latest", "mutable", None),
        ("prod", "today", "mutable", None),
        ("production/web", "today", "mutable", None),
        # "dev/* is all mutable" — first match wins, so even its version tags move
        ("dev/x", "1.0", "mutable", "dev"),
        ("dev/x/y", "v2.0.0", "mutable", "dev"),
    ],
)
def test_examples(repository: str, tag: str, mode: str, rule: str | None) -> None:
    decision = Policy.from_dict(EXAMPLES).decide(repository, tag)
    assert decision.mode == mode
    assert (decision.rule.name if decision.rule else None) == rule


def test_default_applies_when_nothing_matches() -> None:
    policy = Policy.from_dict({"default": "immutable", "rules": []})
    decision = policy.decide("any/repo", "latest")
    assert decision.immutable and decision.rule is None
    assert decision.reason == "the default (immutable)"
    assert not Policy().decide("x", "y").immutable


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("team/*", "team/app", True),
        ("team/*", "team/app/api", False),
        ("team/**", "team/app/api", True),
        ("team/**", "team", False),
        ("**/api", "api", True),
        ("**/api", "a/b/api", True),
        ("te?m/app", "team/app", True),
        ("regex:team/(app|web)", "team/web", True),
        ("regex:team/(app|web)", "team/webx", False),
    ],
)
def test_repository_patterns(pattern: str, name: str, matches: bool) -> None:
    policy = Policy.from_dict({"rules": [{"repositories": pattern, "mode": "immutable"}]})
    assert policy.decide(name, "t").immutable is matches


def test_round_trip() -> None:
    policy = Policy.from_dict(EXAMPLES)
    assert Policy.from_json(policy.to_json()) == policy
    assert policy.to_dict()["rules"][2]["except_tags"] == ["latest"]


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "object"),
        ({"rules": {}}, "list"),
        ({"default": "frozen"}, "default"),
        ({"extra": 1}, "unknown policy keys"),
        ({"rules": [{"mode": "frozen"}]}, "mode"),
        ({"rules": [{"mode": "immutable", "colour": "red"}]}, "unknown keys"),
        ({"rules": [{"mode": "immutable", "tags": "regex:("}]}, "invalid pattern"),
        ({"rules": [{"mode": "immutable", "tags": []}]}, "tags"),
        ({"rules": [{"mode": "immutable", "tags": [""]}]}, "tags"),
        ({"rules": [{"mode": "immutable", "repositories": 3}]}, "repositories"),
        ({"rules": [{"name": "", "mode": "immutable"}]}, "name"),
        ({"rules": [{"name": "a", "mode": "mutable"}, {"name": "a", "mode": "mutable"}]}, "unique"),
        ({"rules": ["x"]}, "table"),
    ],
)
def test_invalid_documents(document: Any, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(document)
    assert fragment in str(info.value)


def test_invalid_json() -> None:
    with pytest.raises(PolicyError):
        Policy.from_json("{not json")
