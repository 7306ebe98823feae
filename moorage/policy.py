"""Tag policies: which tags are immutable, decided by ordered rules (first match wins).

A rule matches repositories and tags by pattern and says ``immutable`` or ``mutable``:

    repositories = ["prod/**"]      # globs: "*" stays inside one path segment, "**" spans any
    tags = ["*"]                    # globs, or "regex:<pattern>" (matched against the whole tag)
    except_tags = ["latest"]        # tags the rule does not cover
    mode = "immutable"

The first rule that matches decides; ``default`` applies when none does. This module is pure:
it parses, validates and evaluates rules. The metadata store keeps the rules in force and every
change to them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

Mode = Literal["immutable", "mutable"]
MODES: tuple[Mode, ...] = ("immutable", "mutable")

_REGEX_PREFIX = "regex:"
_RULE_KEYS = frozenset({"name", "repositories", "tags", "except_tags", "mode", "description"})


class PolicyError(ValueError):
    """A policy document that cannot be used; the message says what to fix."""


def _glob_regex(pattern: str, *, segments: bool) -> str:
    """Translate a glob; with ``segments``, ``*`` stops at ``/`` and ``**`` crosses it."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            if segments and pattern.startswith("**", index):
                # "**/b" also matches "b" (as in .gitignore); "a/**" matches below "a" only.
                if pattern.startswith("**/", index):
                    out.append("(?:.*/)?")
                    index += 3
                    continue
                out.append(".*")
                index += 2
                continue
            out.append("[^/]*" if segments else ".*")
        elif char == "?":
            out.append("[^/]" if segments else ".")
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    text: str
    segments: bool

    @cached_property
    def regex(self) -> re.Pattern[str]:
        if self.text.startswith(_REGEX_PREFIX):
            source = self.text[len(_REGEX_PREFIX) :]
        else:
            source = _glob_regex(self.text, segments=self.segments)
        try:
            return re.compile(source)
        except re.error as exc:
            raise PolicyError(f"invalid pattern {self.text!r}: {exc}") from None

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


def pattern_texts(value: Any, where: str, *, may_be_empty: bool = False) -> tuple[str, ...]:
    """A configured pattern or list of patterns, as a tuple of non-empty strings."""
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list | tuple)
        or not all(isinstance(v, str) and v for v in value)
        or not (value or may_be_empty)
    ):
        raise PolicyError(f"{where} must be a pattern or a list of non-empty patterns")
    return tuple(value)


def _patterns(
    value: Any, where: str, *, segments: bool, may_be_empty: bool = False
) -> tuple[Pattern, ...]:
    texts = pattern_texts(value, where, may_be_empty=may_be_empty)
    patterns = tuple(Pattern(v, segments) for v in texts)
    for pattern in patterns:
        pattern.regex  # noqa: B018 - compiles, so a bad pattern is refused when loaded
    return patterns


@dataclass(frozen=True)
class Rule:
    name: str
    mode: Mode
    repositories: tuple[Pattern, ...] = (Pattern("**", True),)
    tags: tuple[Pattern, ...] = (Pattern("*", False),)
    except_tags: tuple[Pattern, ...] = ()
    description: str = ""

    def matches(self, repository: str, tag: str) -> bool:
        return (
            any(p.matches(repository) for p in self.repositories)
            and any(p.matches(tag) for p in self.tags)
            and not any(p.matches(tag) for p in self.except_tags)
        )

    @classmethod
    def from_dict(cls, value: Any, position: int) -> Rule:
        where = f"rule {position}"
        if not isinstance(value, Mapping):
            raise PolicyError(f"{where} must be a table/object")
        unknown = set(value) - _RULE_KEYS
        if unknown:
            raise PolicyError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        name = value.get("name", f"rule-{position}")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{where}: name must be a non-empty string")
        where = f"rule {name!r}"
        mode = value.get("mode")
        if mode not in MODES:
            raise PolicyError(f"{where}: mode must be 'immutable' or 'mutable'")
        description = value.get("description", "")
        if not isinstance(description, str):
            raise PolicyError(f"{where}: description must be a string")
        return cls(
            name=name,
            mode=mode,
            repositories=_patterns(
                value.get("repositories", "**"), f"{where}: repositories", segments=True
            ),
            tags=_patterns(value.get("tags", "*"), f"{where}: tags", segments=False),
            except_tags=_patterns(
                value.get("except_tags", []),
                f"{where}: except_tags",
                segments=False,
                may_be_empty=True,
            ),
            description=description,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "repositories": [p.text for p in self.repositories],
            "tags": [p.text for p in self.tags],
        }
        if self.except_tags:
            out["except_tags"] = [p.text for p in self.except_tags]
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Decision:
    mode: Mode
    #: The rule that decided, or None when the default applied.
    rule: Rule | None

    @property
    def immutable(self) -> bool:
        return self.mode == "immutable"

    @property
    def reason(self) -> str:
        return f"rule {self.rule.name!r}" if self.rule else f"the default ({self.mode})"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default: Mode = "mutable"

    def decide(self, repository: str, tag: str) -> Decision:
        for rule in self.rules:
            if rule.matches(repository, tag):
                return Decision(rule.mode, rule)
        return Decision(self.default, None)

    @classmethod
    def from_dict(cls, value: Any) -> Policy:
        if not isinstance(value, Mapping):
            raise PolicyError("a policy must be an object with 'default' and 'rules'")
        unknown = set(value) - {"default", "rules"}
        if unknown:
            raise PolicyError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        default = value.get("default", "mutable")
        if default not in MODES:
            raise PolicyError("default must be 'immutable' or 'mutable'")
        raw_rules = value.get("rules", [])
        if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
            raise PolicyError("rules must be a list")
        rules = tuple(Rule.from_dict(r, i + 1) for i, r in enumerate(raw_rules))
        names = [r.name for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PolicyError(f"rule names must be unique: {', '.join(duplicates)}")
        return cls(rules, default)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "rules": [r.to_dict() for r in self.rules]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
