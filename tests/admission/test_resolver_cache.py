"""moorage.admission.resolver.CachingResolver: other registries' answers are cached, each
lookup counted as a hit or a miss in moorage_resolver_cache_lookups_total; this registry's
own images are never cached, nor counted."""

from __future__ import annotations

from moorage.admission.resolver import (
    CachingResolver,
    LocalResolver,
    Resolution,
    ResolveContext,
    RoutingResolver,
)
from moorage.policy import Policy
from moorage.reference import ImageReference, parse_reference
from tests.support.clocks import ManualClock
from tests.support.metrics import sample

CONTEXT = ResolveContext(namespace="team-a")
LOOKUPS = "moorage_resolver_cache_lookups_total"


class Images:
    async def resolve(self, repository: str, tag: str) -> str | None:
        return f"sha256:{'1' * 64}"


class Remote:
    def __init__(self) -> None:
        self.asked = 0

    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution:
        self.asked += 1
        return Resolution(f"sha256:{'2' * 64}", "remote")


async def test_hits_and_misses_are_counted() -> None:
    remote, clock = Remote(), ManualClock(0.0)
    local = LocalResolver(Images(), frozenset({"registry.test"}))
    resolver = CachingResolver(RoutingResolver(local, remote), Policy(), ttl=10, clock=clock)
    hits, misses = sample(LOOKUPS, result="hit"), sample(LOOKUPS, result="miss")
    other = parse_reference("docker.io/library/nginx:1.27")
    assert (await resolver.resolve(other, CONTEXT)).source == "remote"
    assert (await resolver.resolve(other, CONTEXT)).source == "cache"
    assert (await resolver.resolve(other, CONTEXT)).source == "cache"
    clock.advance(11)  # expired
    assert (await resolver.resolve(other, CONTEXT)).source == "remote"
    own = parse_reference("registry.test/team/app:v1")
    assert (await resolver.resolve(own, CONTEXT)).source == "local"
    assert remote.asked == 2
    assert sample(LOOKUPS, result="hit") - hits == 2
    assert sample(LOOKUPS, result="miss") - misses == 2
