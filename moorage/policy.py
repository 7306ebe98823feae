"""Tag policies: which tags are immutable, decided by ordered rules (first match wins).

A rule matches repositories and tags by pattern and says ``immutable`` or ``mutable``:

    repositories = ["prod/**"]      # globs: "*" stays inside one path segment, "**" spans any
    tags = ["*"]                    # globs, or "regex:<pattern>" (matched against the whole tag)
    except_tags = ["latest"]        # tags the rule does not cover
    mode = "immutable"

The first rule that matches decides; ``default`` applies when none does. This module is pure:
it describes the policy documents users write (``PolicyDocument``, read by
``moorage.documents``; ``PolicySettings`` is the config file's ``[policy]``) and evaluates
rules. The metadata store keeps the rules in force and every change to them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal

from moorage.documents import ONE_OR_MORE, Invalid, non_empty, parse_json, read

Mode = Literal["immutable", "mutable"]
MODES: tuple[Mode, ...] = ("immutable", "mutable")

_REGEX_PREFIX = "regex:"


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
        """The compiled pattern; ``Invalid`` for a regex that does not compile."""
        if self.text.startswith(_REGEX_PREFIX):
            source = self.text[len(_REGEX_PREFIX) :]
        else:
            source = _glob_regex(self.text, segments=self.segments)
        try:
            return re.compile(source)
        except re.error as exc:
            raise Invalid(f"invalid pattern {self.text!r}: {exc}") from None

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


def compiles(*, segments: bool) -> Callable[[str], None]:
    """A check: the text is a pattern that compiles (a bad one is refused when loaded)."""

    def check(text: str) -> None:
        Pattern(text, segments).regex  # noqa: B018 - raises Invalid

    return check


def unique_names(rules: Sequence[Any], *at: str | int) -> None:
    """Rule names must be unique (those given, and the ``rule-N`` of unnamed rules)."""
    names = [rule.name or f"rule-{index}" for index, rule in enumerate(rules, 1)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise Invalid(f"rule names must be unique: {', '.join(duplicates)}", *at)


RepositoryPattern = Annotated[str, non_empty, compiles(segments=True)]
TagPattern = Annotated[str, non_empty, compiles(segments=False)]


@dataclass(frozen=True, kw_only=True)
class RuleFields:
    """What a rule matches, as written: a pattern or a list of patterns for each."""

    ITEM_LABEL: ClassVar[str] = "rule"

    #: Default: ``rule-<position>``, from 1.
    name: Annotated[str, non_empty] | None = None
    repositories: Annotated[tuple[RepositoryPattern, ...], ONE_OR_MORE, non_empty] = ("**",)
    tags: Annotated[tuple[TagPattern, ...], ONE_OR_MORE, non_empty] = ("*",)
    except_tags: Annotated[tuple[TagPattern, ...], ONE_OR_MORE] = ()
    description: str = ""

    def rule(self, position: int, mode: Mode) -> Rule:
        return Rule(
            name=self.name or f"rule-{position}",
            mode=mode,
            repositories=tuple(Pattern(text, True) for text in self.repositories),
            tags=tuple(Pattern(text, False) for text in self.tags),
            except_tags=tuple(Pattern(text, False) for text in self.except_tags),
            description=self.description,
        )


@dataclass(frozen=True, kw_only=True)
class RuleDocument(RuleFields):
    """A rule of a tag policy as written."""

    mode: Mode


@dataclass(frozen=True)
class PolicyDocument:
    """A tag policy as written (``[policy]``, or the JSON the API takes)."""

    default: Mode = "mutable"
    rules: tuple[RuleDocument, ...] = ()

    def verify(self) -> None:
        unique_names(self.rules, "rules")

    def policy(self) -> Policy:
        rules = tuple(rule.rule(index, rule.mode) for index, rule in enumerate(self.rules, 1))
        return Policy(rules, self.default)


@dataclass(frozen=True)
class PolicySettings:
    """The ``[policy]`` table of the config file: the tag policy it declares, if any."""

    default: Mode | None = None
    rules: tuple[RuleDocument, ...] | None = None

    def verify(self) -> None:
        unique_names(self.rules or (), "rules")

    def configured(self) -> Policy | None:
        """The policy the configuration declares, or None if it declares none (the policy in
        the metadata store then stays as it is)."""
        if self.default is None and self.rules is None:
            return None
        return PolicyDocument(self.default or "mutable", self.rules or ()).policy()


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
    def from_dict(cls, value: Any, source: str = "tag policy") -> Policy:
        """Read a policy document; ``DocumentError`` names ``source``, the key and the fault."""
        return read(PolicyDocument, value, source).policy()

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "tag policy") -> Policy:
        return cls.from_dict(parse_json(text, source), source)

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "rules": [r.to_dict() for r in self.rules]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
