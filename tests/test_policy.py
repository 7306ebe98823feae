"""moorage.policy: rule shapes, first match wins, the default, and invalid documents."""

from __future__ import annotations

from typing import Any

import pytest

from moorage.documents import DocumentError
from moorage.policy import Policy

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
    ("document", "key", "problem"),
    [
        ([], "", "expected a table/object, not a list"),
        ({"rules": {}}, "rules", "expected a list, not a table/object"),
        ({"default": "frozen"}, "default", "expected 'immutable' or 'mutable', not 'frozen'"),
        ({"extra": 1}, "extra", "unknown key (known: default, rules)"),
        (
            {"rules": [{"mode": "frozen"}]},
            "rules[0].mode",
            "expected 'immutable' or 'mutable', not 'frozen'",
        ),
        (
            {"rules": [{"name": "a", "mode": "frozen"}]},
            "rules: rule 'a': mode",
            "expected 'immutable' or 'mutable', not 'frozen'",
        ),
        ({"rules": [{"name": "a"}]}, "rules: rule 'a': mode", "missing"),
        (
            {"rules": [{"mode": "immutable", "colour": "red"}]},
            "rules[0].colour",
            "unknown key (known: description, except_tags, mode, name, repositories, tags)",
        ),
        (
            {"rules": [{"mode": "immutable", "tags": "regex:("}]},
            "rules[0].tags",
            "invalid pattern 'regex:(': missing ), unterminated subpattern at position 0",
        ),
        (
            {"rules": [{"name": "v", "mode": "immutable", "tags": ["v*", "regex:["]}]},
            "rules: rule 'v': tags[1]",
            "invalid pattern 'regex:[': unterminated character set at position 0",
        ),
        ({"rules": [{"mode": "immutable", "tags": []}]}, "rules[0].tags", "must not be empty"),
        ({"rules": [{"mode": "immutable", "tags": [""]}]}, "rules[0].tags[0]", "must not be empty"),
        (
            {"rules": [{"mode": "immutable", "repositories": 3}]},
            "rules[0].repositories",
            "expected a string or a list, not 3",
        ),
        ({"rules": [{"name": "", "mode": "immutable"}]}, "rules[0].name", "must not be empty"),
        (
            {"rules": [{"name": "a", "mode": "mutable"}, {"name": "a", "mode": "mutable"}]},
            "rules",
            "rule names must be unique: a",
        ),
        (
            {"rules": [{"mode": "mutable"}, {"name": "rule-1", "mode": "mutable"}]},
            "rules",
            "rule names must be unique: rule-1",
        ),
        ({"rules": ["x"]}, "rules[0]", "expected a table/object, not 'x'"),
    ],
)
def test_invalid_documents(document: Any, key: str, problem: str) -> None:
    with pytest.raises(DocumentError) as info:
        Policy.from_dict(document, "the policy in a test")
    error = info.value
    assert (error.source, error.key, error.problem) == ("the policy in a test", key, problem)
    assert str(error) == ": ".join(part for part in ("the policy in a test", key, problem) if part)


def test_invalid_json() -> None:
    with pytest.raises(DocumentError) as info:
        Policy.from_json("{not json", "policy.json")
    assert str(info.value).startswith("policy.json: not valid JSON (")
    with pytest.raises(DocumentError, match=r"^tag policy: not valid JSON"):
        Policy.from_json(b"\xff\xfe{}")
