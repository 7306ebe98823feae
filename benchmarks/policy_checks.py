"""The tag policy benchmark's correctness checks, so that a registry that skips work cannot
score: every PUT answered 201 with the pushed digest (``check_outcomes``), every tag ends where
the pushes say (``check_tags``), the right code answers (``check_code``: the baseline has no
_moorage extension, the current code has the expected policy), tag history has one event per
change (``check_history``), and with rules each tag is decided by the planned rule
(``check_decisions``) and another digest pushed to an immutable tag is refused with 403 DENIED
(``check_refusals``, outside the timed loop). Each returns a line saying what it verified."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp
from errors import BenchmarkError
from manifest_client import Outcome, bounded, get_json, put_all, tag_digests
from policy_workload import Plan, Push, TagKey, make_push


def check_outcomes(outcomes: Sequence[Outcome], what: str) -> None:
    bad = [o for o in outcomes if o.status != 201 or o.digest != o.push.digest]
    if bad:
        first = bad[0]
        raise BenchmarkError(
            f"{len(bad)} of {len(outcomes)} {what} PUTs failed, e.g. "
            f"{first.push.repository}:{first.push.tag} answered {first.status} "
            f"(digest {first.digest}, expected {first.push.digest}): {first.body[:300]!r}"
        )


def expected_tags(outcomes: Sequence[Outcome]) -> dict[TagKey, set[str]]:
    """The digests each tag may point at after these pushes. The last PUT to commit cannot
    have been answered before another PUT to the same tag was sent (that one would have
    committed later), so the candidates are the PUTs still open when the last one started;
    with one push at a time, or one digest per tag (immutable tags), that is exactly one."""
    by_tag: dict[TagKey, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_tag[outcome.push.key].append(outcome)
    expected = {}
    for key, pushes in by_tag.items():
        last_start = max(o.start for o in pushes)
        expected[key] = {o.push.digest for o in pushes if o.end >= last_start}
    return expected


async def check_tags(
    session: aiohttp.ClientSession, outcomes: Sequence[Outcome], concurrency: int
) -> str:
    expected = expected_tags(outcomes)
    found = await tag_digests(session, list(expected), concurrency)
    wrong = [(k, found[k], digests) for k, digests in expected.items() if found[k] not in digests]
    if wrong:
        key, digest, digests = wrong[0]
        raise BenchmarkError(
            f"{len(wrong)} tags point at the wrong manifest, e.g. {key[0]}:{key[1]} at "
            f"{digest}, expected one of {sorted(digests)}"
        )
    exact = sum(len(d) == 1 for d in expected.values())
    return (
        f"{len(expected)} tags point where expected ({exact} exactly, the rest among racing PUTs)"
    )


async def check_code(session: aiohttp.ClientSession, label: str, rules: list[str] | None) -> str:
    """``rules`` None: the baseline, which has no _moorage extension; otherwise the current
    code, which has one, with a policy of these rules."""
    # Fresh connections, so both workers (one SO_REUSEPORT socket each) are likely asked.
    statuses = []
    bodies: list[Any] = []
    for _ in range(6):
        async with session.get(
            "/v2/_moorage/policy/rules", headers={"Connection": "close"}
        ) as response:
            statuses.append(response.status)
            raw = await response.read()
        bodies.append(json.loads(raw) if response.status == 200 else None)
    if rules is None:
        if 200 in statuses:
            raise BenchmarkError(f"{label} answers the _moorage extension: not the baseline")
        return f"no _moorage extension (answers {sorted(set(statuses))})"
    if set(statuses) != {200}:
        raise BenchmarkError(f"{label}: GET policy/rules answered {statuses}")
    names = [[r["name"] for r in body["rules"]] for body in bodies]
    if any(n != rules for n in names):
        raise BenchmarkError(f"{label}: policy rules {names[0]}, expected {rules}")
    return f"policy in force: {len(rules)} rules"


async def check_decisions(
    session: aiohttp.ClientSession, pushes: Sequence[Push], concurrency: int
) -> str:
    """With rules: each tag is decided by the planned rule, immutable unless it moves."""
    unique = list({push.key: push for push in pushes}.values())
    wrong: list[str] = []

    async def check(push: Push) -> None:
        status, body = await get_json(
            session,
            f"/v2/_moorage/policy/check?repository={push.repository}&tag={push.tag}",
        )
        rule = body["rule"]["name"] if status == 200 and body["rule"] else None
        immutable = status == 200 and body["immutable"]
        if status != 200 or rule != push.rule or immutable != (push.kind != "move"):
            wrong.append(f"{push.repository}:{push.tag} -> {status} {body}")

    await bounded(unique, concurrency, check)
    if wrong:
        raise BenchmarkError(f"{len(wrong)} tags decided otherwise than planned, e.g. {wrong[0]}")
    rules = Counter(push.rule or "(default)" for push in unique)
    return f"{len(unique)} tags decided as planned ({dict(rules)})"


async def history(session: aiohttp.ClientSession, key: TagKey) -> list[dict[str, Any]]:
    status, body = await get_json(session, f"/v2/{key[0]}/_moorage/tags/history?tag={key[1]}")
    if status != 200:
        raise BenchmarkError(f"tag history of {key[0]}:{key[1]} answered {status}")
    events: list[dict[str, Any]] = body["events"]
    return events


async def check_history(session: aiohttp.ClientSession, outcomes: Sequence[Outcome]) -> str:
    """Every push that changed a tag is one event; re-pushes of the same digest are none."""
    moved = ("dev/web", "main")
    seeded = ("prod/web", "v0.9.0")
    pushes = sum(o.push.key == moved for o in outcomes)
    repushes = sum(o.push.key == seeded for o in outcomes)
    for key, want in ((moved, pushes), (seeded, 1)):
        events = await history(session, key)
        if len(events) != want:
            raise BenchmarkError(
                f"history of {key[0]}:{key[1]} has {len(events)} events, expected {want}"
            )
    return (
        f"history: {pushes} events for {pushes} pushes to {':'.join(moved)}, "
        f"1 for {':'.join(seeded)} created then re-pushed {repushes - 1} times"
    )


async def check_refusals(session: aiohttp.ClientSession, plan: Plan) -> str:
    """Another digest pushed to an immutable tag: 403 DENIED naming the rule, tag unchanged,
    and a 'refused' event in its history. Outside the timed loop."""
    targets: dict[str, Push] = {}
    for push in [*plan.timed, *plan.seeds]:
        if push.kind == "create" and push.rule is not None:
            targets.setdefault(push.rule, push)
    for number, target in enumerate(targets.values()):
        attempt = make_push("move", target.repository, target.tag, f"refused-{number}", None)
        [outcome] = await put_all(session, [attempt], 1)
        try:
            error = json.loads(outcome.body)["errors"][0]
        except (ValueError, KeyError, IndexError):
            error = {}
        if (
            outcome.status != 403
            or error.get("code") != "DENIED"
            or error.get("detail", {}).get("rule") != target.rule
        ):
            raise BenchmarkError(
                f"pushing another digest to immutable {target.repository}:{target.tag} "
                f"answered {outcome.status} {outcome.body[:300]!r}, expected 403 DENIED "
                f"by rule {target.rule!r}"
            )
        found = await tag_digests(session, [target.key], 1)
        if found[target.key] != target.digest:
            raise BenchmarkError(f"refused push moved {target.repository}:{target.tag}")
        events = await history(session, target.key)
        if not events or events[0]["action"] != "refused":
            raise BenchmarkError(f"no 'refused' event for {target.repository}:{target.tag}")
    return f"{len(targets)} pushes of another digest to immutable tags refused (403 DENIED) " + (
        f"by rules {', '.join(targets)}; tags unchanged, refusals in history"
    )
