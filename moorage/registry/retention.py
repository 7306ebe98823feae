"""Retention rules: which tags garbage collection removes, and how long untagged manifests stay.

Written in the style of tag policies (``moorage.policy``), as ``[[gc.retention]]`` tables:

    name = "ci-builds"
    repositories = ["team/**"]          # globs ("*" one path segment, "**" any), or regex:
    tags = ["regex:^ci-.*"]
    except_tags = ["latest"]
    keep_last = 10                      # the 10 most recently pushed tags the rule matches
    keep_pushed_within = 604800         # seconds: tags pushed this recently
    keep_pulled_within = 2592000        # seconds: tags whose image was pulled this recently
    untagged_after = 86400              # seconds: untagged manifests of matching repositories

A tag is judged by the first rule that matches it among the rules that keep tags by count or
age (``keep_*``); no such rule, no judgement: the tag stays. It stays if any of its rule's
``keep_*`` holds: ``keep_last`` counts the tags the rule matches in the repository, newest
push first (a push is when the tag got the digest it points at; re-pushing the same digest is
not a new push); a pull is of the digest the tag points at, by tag or by digest. Otherwise the
tag expires, unless the tag policy makes it immutable or the cluster uses its image (it runs,
or the admission webhook pinned it within ``gc.pins_window``): those are spared, and the dry
run says so. An expired tag is deleted with a history event naming the rule; its manifest
then goes like any untagged one, after ``untagged_after`` (restorable until then, and within
``gc.history_window``).

``untagged_after`` applies to the repositories of the first rule matching the repository that
sets it; it overrides ``gc.untagged_after`` and ``gc.keep_untagged`` there.

This module is pure: the rules as written, and the judgement of one repository's tags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from moorage.documents import Invalid, at_least
from moorage.model import ExpiredTag
from moorage.policy import Pattern, Policy, RuleFields
from moorage.times import ago

Seconds = Annotated[float, at_least(0)]


@dataclass(frozen=True, kw_only=True)
class RetentionRuleDocument(RuleFields):
    """A retention rule as written (an item of ``[[gc.retention]]``)."""

    ITEM_LABEL: ClassVar[str] = "retention rule"

    keep_last: Annotated[int, at_least(0)] | None = None
    keep_pushed_within: Seconds | None = None
    keep_pulled_within: Seconds | None = None
    untagged_after: Seconds | None = None

    def verify(self) -> None:
        if (
            self.keep_last is None
            and self.keep_pushed_within is None
            and self.keep_pulled_within is None
            and self.untagged_after is None
        ):
            raise Invalid(
                "a retention rule needs keep_last, keep_pushed_within, keep_pulled_within "
                "or untagged_after"
            )

    def compile(self, position: int) -> RetentionRule:
        return RetentionRule(
            name=self.name or f"rule-{position}",
            repositories=tuple(Pattern(text, True) for text in self.repositories),
            tags=tuple(Pattern(text, False) for text in self.tags),
            except_tags=tuple(Pattern(text, False) for text in self.except_tags),
            keep_last=self.keep_last,
            keep_pushed_within=self.keep_pushed_within,
            keep_pulled_within=self.keep_pulled_within,
            untagged_after=self.untagged_after,
        )


@dataclass(frozen=True, kw_only=True)
class RetentionRule:
    name: str
    repositories: tuple[Pattern, ...]
    tags: tuple[Pattern, ...]
    except_tags: tuple[Pattern, ...]
    keep_last: int | None = None
    keep_pushed_within: float | None = None
    keep_pulled_within: float | None = None
    untagged_after: float | None = None

    @property
    def judges_tags(self) -> bool:
        return not (
            self.keep_last is None
            and self.keep_pushed_within is None
            and self.keep_pulled_within is None
        )

    def covers(self, repository: str) -> bool:
        return any(p.matches(repository) for p in self.repositories)

    def matches(self, repository: str, tag: str) -> bool:
        return (
            self.covers(repository)
            and any(p.matches(tag) for p in self.tags)
            and not any(p.matches(tag) for p in self.except_tags)
        )

    def keeps(self, rank: int, pushed: float, pulled: float | None, now: float) -> str | None:
        """Why the rule keeps a tag (its ``rank``-th newest push, from 0), or None."""
        if self.keep_last is not None and rank < self.keep_last:
            return f"among the {self.keep_last} most recently pushed"
        if self.keep_pushed_within is not None and pushed >= now - self.keep_pushed_within:
            return f"pushed {ago(now - pushed)} ago"
        if (
            self.keep_pulled_within is not None
            and pulled is not None
            and pulled >= now - self.keep_pulled_within
        ):
            return f"pulled {ago(now - pulled)} ago"
        return None

    def why_expired(self, rank: int, pushed: float, pulled: float | None, now: float) -> str:
        parts = []
        if self.keep_last is not None:
            parts.append(f"not among its {self.keep_last} most recently pushed (#{rank + 1})")
        parts.append(f"pushed {ago(now - pushed)} ago")
        if self.keep_pulled_within is not None:
            parts.append("never pulled" if pulled is None else f"pulled {ago(now - pulled)} ago")
        return f"retention rule {self.name!r}: " + ", ".join(parts)


@dataclass(frozen=True)
class Retention:
    """The retention rules in force, and the tag policy (at ``policy_version``) they obey."""

    rules: tuple[RetentionRule, ...] = ()
    policy: Policy = field(default_factory=Policy)
    policy_version: int = 0

    @classmethod
    def from_documents(
        cls, documents: Sequence[RetentionRuleDocument], policy: Policy, version: int
    ) -> Retention:
        rules = tuple(document.compile(index) for index, document in enumerate(documents, 1))
        return cls(rules, policy, version)

    def untagged_after(
        self, repository: str, default: float | None
    ) -> tuple[float | None, str | None]:
        """How long untagged manifests of the repository stay (None: for ever), and the rule
        that says so (None: ``default`` applies)."""
        for rule in self.rules:
            if rule.untagged_after is not None and rule.covers(repository):
                return rule.untagged_after, rule.name
        return default, None

    @property
    def longest_untagged(self) -> float:
        return max((r.untagged_after or 0.0 for r in self.rules), default=0.0)

    def judges(self, repository: str) -> bool:
        """Whether any rule may remove tags of the repository."""
        return any(rule.judges_tags and rule.covers(repository) for rule in self.rules)

    def expire(
        self,
        repository: str,
        tags: Sequence[tuple[str, str]],
        tagged_at: Mapping[str, float],
        last_pulls: Mapping[str, float],
        protected: Mapping[str, str],
        now: float,
    ) -> tuple[list[ExpiredTag], list[tuple[str, str]]]:
        """The tags of the repository its rules remove, and those a rule would remove but
        that are spared (tag, why): immutable by the tag policy, or their image in use
        (``protected``: digest -> why)."""
        judging = [rule for rule in self.rules if rule.judges_tags and rule.covers(repository)]
        groups: dict[int, list[tuple[str, str]]] = {}
        for tag, digest in tags:
            index = next((i for i, r in enumerate(judging) if r.matches(repository, tag)), None)
            if index is not None:
                groups.setdefault(index, []).append((tag, digest))
        expired: list[ExpiredTag] = []
        spared: list[tuple[str, str]] = []
        for index, members in groups.items():
            rule = judging[index]
            name = rule.name
            members.sort(key=lambda item: (-tagged_at.get(item[0], 0.0), item[0]))
            for rank, (tag, digest) in enumerate(members):
                pushed = tagged_at.get(tag, 0.0)
                pulled = last_pulls.get(digest)
                if rule.keeps(rank, pushed, pulled, now) is not None:
                    continue
                decision = self.policy.decide(repository, tag)
                if decision.immutable:
                    spared.append(
                        (tag, f"retention rule {name!r} spares it: immutable ({decision.reason})")
                    )
                elif digest in protected:
                    spared.append((tag, f"retention rule {name!r} spares it: {protected[digest]}"))
                else:
                    expired.append(
                        ExpiredTag(tag, digest, name, rule.why_expired(rank, pushed, pulled, now))
                    )
        expired.sort(key=lambda e: e.tag)
        spared.sort()
        return expired, spared
