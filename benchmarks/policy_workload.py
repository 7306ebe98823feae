"""The tag policy benchmark's workload: the six repositories, the policy of six rules the
"with rules" registry gets (``POLICY``), and the plan of manifest PUTs by tag every registry
gets alike (``make_plan``): immutable seed tags, a warm-up, then the timed pushes cycling
through ``SLOTS`` (40% new immutable tags, 40% moves of mutable tags, 20% re-pushes of a
seed's own digest), each a ``Push`` of a small distinct manifest that knows which rule should
decide its tag; ``mix`` counts them by rule and kind."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry_http import digest_of, oci_manifest

TagKey = tuple[str, str]

REPOSITORIES = ("prod/web", "prod/api", "dev/web", "dev/api", "team/tools", "ci/builds")

POLICY: dict[str, Any] = {
    "default": "mutable",
    "rules": [
        {
            "name": "versions",
            "tags": [r"regex:v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?"],
            "mode": "immutable",
            "description": "release versions never move, in any repository",
        },
        {
            "name": "prod",
            "repositories": ["prod/**"],
            "tags": ["*"],
            "except_tags": ["latest"],
            "mode": "immutable",
            "description": "production tags are immutable, except latest",
        },
        {"name": "dev", "repositories": ["dev/**"], "mode": "mutable"},
        {"name": "digest-tags", "tags": ["regex:sha-[0-9a-f]{7,40}"], "mode": "immutable"},
        {
            "name": "releases",
            "repositories": ["team/**", "ci/**"],
            "tags": ["release-*", "rc-*"],
            "mode": "immutable",
        },
        {"name": "scratch", "tags": ["pr-*", "nightly", "edge", "main"], "mode": "mutable"},
    ],
}
RULE_NAMES = [rule["name"] for rule in POLICY["rules"]]

# One cycle of the workload: 8 creates of immutable tags, 8 moves of mutable tags, 4 re-pushes.
SLOTS = (
    "create-version",
    "move-dev",
    "create-build",
    "move-scratch",
    "repush",
    "create-sha",
    "move-latest",
    "create-version",
    "move-dev",
    "create-release",
    "repush",
    "move-scratch",
    "create-build",
    "move-latest",
    "create-sha",
    "repush",
    "create-version",
    "move-dev",
    "move-scratch",
    "repush",
)
_REPUSH_ORDINAL = {
    slot: n for n, slot in enumerate(i for i, s in enumerate(SLOTS) if s == "repush")
}
SEEDS_PER_REPOSITORY = 8
TIMED_SERIES, WARMUP_SERIES = 1, 2


@dataclass(frozen=True)
class Push:
    """One manifest PUT by tag; ``rule`` is the rule that should decide the tag (None: the
    policy's default), ``kind`` says what the push does to the tag."""

    kind: str  # "create", "move" or "repush"
    repository: str
    tag: str
    manifest: bytes
    digest: str
    rule: str | None

    @property
    def key(self) -> TagKey:
        return (self.repository, self.tag)


@dataclass
class Plan:
    seeds: list[Push]
    warmup: list[Push]
    timed: list[Push]


def blobs_of(repository: str) -> tuple[bytes, bytes]:
    """The config and layer every manifest of ``repository`` references."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {"repository": repository}},
        }
    ).encode()
    layer = hashlib.sha256(repository.encode()).digest() * 64  # 2 KiB
    return config, layer


def sha_tag(label: str) -> str:
    """A tag named like a short commit hash (``sha-`` and 12 hex digits), distinct by label."""
    return "sha-" + hashlib.sha256(label.encode()).hexdigest()[:12]


def make_push(kind: str, repository: str, tag: str, label: str, rule: str | None) -> Push:
    """A push of the small manifest ``label`` (distinct labels, distinct digests)."""
    config, layer = blobs_of(repository)
    annotations = {"org.opencontainers.image.revision": label}
    manifest = oci_manifest(config, layer, annotations, compact=True)
    return Push(kind, repository, tag, manifest, digest_of(manifest), rule)


def seed_pushes() -> list[Push]:
    """Immutable tags created before the measurement; the workload re-pushes their digests."""
    seeds: list[Push] = []
    for k in range(SEEDS_PER_REPOSITORY):
        seeds += [
            make_push("create", "prod/web", f"v0.9.{k}", f"seed-{k}", "versions"),
            make_push("create", "prod/api", f"build-seed-{k}", f"seed-{k}", "prod"),
            make_push("create", "team/tools", sha_tag(f"seed-{k}"), f"seed-{k}", "digest-tags"),
            make_push("create", "ci/builds", f"release-seed-{k}", f"seed-{k}", "releases"),
        ]
    return seeds


def workload(count: int, series: int, seeds: Sequence[Push]) -> list[Push]:
    """``count`` pushes following ``SLOTS``; ``series`` keeps new tags and manifests apart."""
    pushes: list[Push] = []
    for index in range(count):
        cycle, slot = divmod(index, len(SLOTS))
        kind = SLOTS[slot]
        label = f"s{series}-{index}"
        pair = (cycle + slot) % 2
        if kind == "create-version":
            repository = REPOSITORIES[(cycle + slot) % len(REPOSITORIES)]
            push = make_push("create", repository, f"v{series}.{slot}.{cycle}", label, "versions")
        elif kind == "create-build":
            repository = ("prod/web", "prod/api")[pair]
            push = make_push("create", repository, f"build-{series}-{index}", label, "prod")
        elif kind == "create-sha":
            repository = ("team/tools", "ci/builds")[pair]
            push = make_push("create", repository, sha_tag(label), label, "digest-tags")
        elif kind == "create-release":
            repository = ("team/tools", "ci/builds")[pair]
            push = make_push("create", repository, f"release-{series}-{index}", label, "releases")
        elif kind == "move-dev":
            tag = ("main", "feature-a", "feature-b")[cycle % 3]
            push = make_push("move", ("dev/web", "dev/api")[pair], tag, label, "dev")
        elif kind == "move-latest":
            push = make_push("move", ("prod/web", "prod/api")[pair], "latest", label, None)
        elif kind == "move-scratch":
            if pair:
                push = make_push("move", "ci/builds", f"pr-{cycle % 8}", label, "scratch")
            else:
                tag = ("nightly", "edge")[cycle % 2]
                push = make_push("move", "team/tools", tag, label, "scratch")
        else:
            seed = seeds[(cycle * 4 + _REPUSH_ORDINAL[slot]) % len(seeds)]
            push = Push("repush", seed.repository, seed.tag, seed.manifest, seed.digest, seed.rule)
        pushes.append(push)
    return pushes


def make_plan(manifests: int, warmup: int) -> Plan:
    seeds = seed_pushes()
    return Plan(
        seeds, workload(warmup, WARMUP_SERIES, seeds), workload(manifests, TIMED_SERIES, seeds)
    )


def mix(pushes: Sequence[Push]) -> dict[str, dict[str, int]]:
    """How many pushes each rule decides, by what the push does to the tag."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for push in pushes:
        counts[push.rule or "(default)"][push.kind] += 1
    return {rule: dict(kinds) for rule, kinds in counts.items()}
