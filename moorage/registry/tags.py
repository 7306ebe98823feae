"""Tag policies in force, the guard that enforces them, and the history of every tag.

The policy lives in the metadata store (so every worker and replica enforces the same one);
each process keeps the parsed rules and re-reads them only when the stored version changes.
The guard runs inside the metadata transaction that changes a tag, so the check and the write
are one atomic step; the same transaction checks that the guard's policy is still the stored
one, so a policy change takes effect for every change that commits after it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from moorage import metrics
from moorage.documents import DocumentError
from moorage.errors import ErrorCode, RegistryError
from moorage.meta.errors import ManifestNotFound, PolicyChanged, TagRefused
from moorage.meta.protocols import ManifestStore, PolicyStore
from moorage.model import Actor, PolicyChange, PolicyRecord, Refusal, TagEvent, TagGuard
from moorage.policy import Decision, Policy

T = TypeVar("T")

#: Tries of a guarded change, each of which may find the policy changed since it was read.
GUARD_ATTEMPTS = 5


def _detail(refusal: Refusal) -> dict[str, str | None]:
    return {
        "repository": refusal.repository,
        "tag": refusal.tag,
        "digest": refusal.current_digest,
        "attempted": refusal.attempted_digest,
        "rule": refusal.rule,
    }


def denied(
    exc: TagRefused, deleting: str | None = None, blob: str | None = None, pushed: int = 1
) -> RegistryError:
    """The OCI error a client sees for a refused tag change (each refusal is counted in
    ``moorage_tag_refusals_total``).

    ``deleting`` is the manifest a DELETE named; when the refused tag points at an index that
    lists it rather than at it, the message says so. ``blob`` is the blob a DELETE named,
    which the tag's image uses. ``pushed`` is how many tags a refused push named: with more
    than one, the message names every refused tag and says that none was changed, and the
    detail lists every refusal under ``refused``.
    """
    refused = metrics.current().tag_refusals
    for each in exc.refusals:
        refused.labels(each.rule or metrics.DEFAULT_RULE).inc()
    refusal = exc.refusal
    message = "; ".join(r.message for r in exc.refusals)
    if pushed > 1:
        message += f"; none of the {pushed} tags of this push was changed"
    rule = f"rule {refusal.rule!r}" if refusal.rule else "the default policy"
    if blob is not None:
        message = (
            f"blob {blob} cannot be deleted: the image of immutable tag "
            f"{refusal.repository}:{refusal.tag} ({refusal.current_digest}) uses it ({rule})"
        )
    elif deleting is not None and refusal.current_digest != deleting:
        message = (
            f"manifest {deleting} cannot be deleted: it is listed by {refusal.current_digest}, "
            f"which immutable tag {refusal.repository}:{refusal.tag} points at ({rule})"
        )
    detail: dict[str, Any] = _detail(refusal)
    if len(exc.refusals) > 1:
        detail["refused"] = [_detail(r) for r in exc.refusals]
    return RegistryError(ErrorCode.DENIED, message, detail=detail)


def _refusal(
    repository: str, tag: str, decision: Decision, current: str, new: str | None
) -> Refusal:
    what = f"moved to {new}; push to a new tag instead" if new is not None else "deleted"
    return Refusal(
        repository=repository,
        tag=tag,
        current_digest=current,
        attempted_digest=new,
        rule=decision.rule.name if decision.rule else None,
        message=(
            f"tag {repository}:{tag} is immutable ({decision.reason}) and points at "
            f"{current}; it cannot be {what}"
        ),
    )


def make_guard(policy: Policy, repository: str, version: int | None = None) -> TagGuard:
    """A guard refusing any change that moves or deletes an immutable tag; ``version`` is the
    stored policy's version, if ``policy`` is that one.

    Creating a tag, and re-pushing the digest it already holds, are always allowed.
    """

    def decide(tag: str, current: str | None, new: str | None) -> Refusal | None:
        if current is None or current == new:
            return None
        decision = policy.decide(repository, tag)
        if not decision.immutable:
            return None
        return _refusal(repository, tag, decision, current, new)

    return TagGuard(decide, version)


@dataclass(frozen=True)
class PolicyState:
    policy: Policy
    version: int


class TagPolicies:
    def __init__(self, meta: PolicyStore) -> None:
        self.meta = meta
        self._state = PolicyState(Policy(), 0)

    async def current(self) -> PolicyState:
        """The policy in force; a cheap version check, re-parsed only after a change."""
        version = await self.meta.policy_version()
        if version != self._state.version:
            record = await self.meta.get_policy()
            if record is not None:
                policy = Policy.from_json(record.document, "the stored tag policy")
                self._state = PolicyState(policy, record.version)
        return self._state

    async def guarded(self, repository: str, change: Callable[[TagGuard], Awaitable[T]]) -> T:
        """Run ``change`` with a guard enforcing the policy in force when it commits.

        The guard comes from the policy this process last read, stamped with its version,
        without asking the store; the store checks the stamp in the transaction that changes
        the tag (``PolicyChanged``), and then the change runs again under the new policy.
        """
        state = self._state
        for _ in range(GUARD_ATTEMPTS):
            try:
                return await change(make_guard(state.policy, repository, state.version))
            except PolicyChanged:
                state = await self.current()
        raise RegistryError(
            ErrorCode.UNKNOWN,
            f"the tag policy changed {GUARD_ATTEMPTS} times while this request ran; try again",
            status=503,
        )

    async def stored(self) -> PolicyRecord | None:
        """The stored policy with who installed it, when and how; None if none ever was."""
        return await self.meta.get_policy()

    async def check(self, repository: str, tag: str) -> Decision:
        return (await self.current()).policy.decide(repository, tag)

    async def replace(self, policy: Policy, actor: Actor, source: str) -> int:
        record = await self.meta.get_policy()
        # Keep the configured policy's hash: the file is re-applied only once it changes.
        configured = None if record is None else record.source_hash
        return await self.meta.set_policy(policy.to_json(), actor, source, configured)

    async def apply_configured(self, policy: Policy, actor: Actor, source: str) -> bool:
        """Install the configuration file's policy if it changed since it was last installed.

        Changes made through the API stay in force until the file's policy itself changes.
        """
        document = policy.to_json()
        digest = hashlib.sha256(document.encode()).hexdigest()
        record = await self.meta.get_policy()
        if record is not None and record.source_hash == digest:
            return False
        await self.meta.set_policy(document, actor, source, digest)
        return True

    async def changes(self, limit: int | None) -> list[PolicyChange]:
        return await self.meta.policy_changes(limit)


def parse_policy(body: bytes | str, source: str) -> Policy:
    """A policy document sent as JSON; its POLICY_INVALID error names ``source``, the key at
    fault and what is wrong."""
    try:
        return Policy.from_json(body, source)
    except DocumentError as exc:
        raise RegistryError(ErrorCode.POLICY_INVALID, str(exc)) from None


@dataclass
class TagSpan:
    """A period during which a tag pointed at a digest; ``until`` is None while it still does."""

    repository: str
    tag: str
    since: float
    until: float | None = None


class TagHistory:
    def __init__(self, meta: ManifestStore, policies: TagPolicies) -> None:
        self.meta = meta
        self.policies = policies

    async def events(
        self, repository: str, tag: str, limit: int | None, before: int | None
    ) -> list[TagEvent]:
        return await self.meta.tag_history(repository, tag, limit, before)

    async def at(self, repository: str, tag: str, when: float) -> TagEvent | None:
        """Where the tag pointed at ``when``, to the millisecond: times are shown with
        milliseconds, so a change shown at 10:00:00.123 counts as made by then."""
        end_of_millisecond = (math.floor(when * 1000) + 1) / 1000
        return await self.meta.tag_at(repository, tag, end_of_millisecond)

    async def tags_for(self, digest: str) -> list[TagSpan]:
        """Every period in which a tag pointed at ``digest``, oldest first."""
        spans: list[TagSpan] = []
        open_spans: dict[tuple[str, str], TagSpan] = {}
        for event in await self.meta.digest_events(digest):
            key = (event.repository, event.tag)
            if event.old_digest == digest and key in open_spans:
                open_spans.pop(key).until = event.at
            if event.new_digest == digest:
                span = TagSpan(event.repository, event.tag, event.at)
                spans.append(span)
                open_spans[key] = span
        return spans

    async def restore(self, repository: str, tag: str, digest: str, actor: Actor) -> str | None:
        try:
            return await self.policies.guarded(
                repository, partial(self.meta.restore_tag, repository, tag, digest, actor)
            )
        except ManifestNotFound:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, f"{repository} has no manifest {digest}"
            ) from None
        except TagRefused as exc:
            raise denied(exc) from None
