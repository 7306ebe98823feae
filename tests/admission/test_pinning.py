"""The pinning webhook (moorage.admission.mutate) on AdmissionReview v1 requests for every
kind it handles: the exact JSONPatch, idempotency, and that nothing else changes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from moorage.admission.mutate import Pinner
from moorage.admission.pinning import pinned_image
from moorage.admission.resolver import (
    LocalResolver,
    Resolution,
    ResolveContext,
    RoutingResolver,
)
from moorage.admission.review import parse_review
from moorage.admission.validation import local_tag_mode, parse_rules, validate
from moorage.meta.sqlite import SQLiteMetadata
from moorage.model import Actor, PinRecord
from moorage.policy import Policy
from moorage.reference import ImageReference, parse_reference
from moorage.registry.service import Registry
from moorage.storage.memory import MemoryDriver
from tests.admission.reviews import GROUPS, apply_patch, pod_spec, review, workload
from tests.support.images import manifest_record

HOST = "registry.test:5000"
ACTOR = Actor(None, "test", "test")
APP = f"{HOST}/team/app:today"
SIDE = f"{HOST}/team/sidecar:1.0"
PINNED = f"{HOST}/team/app@sha256:{'e' * 64}"


class Env:
    def __init__(self, meta: SQLiteMetadata) -> None:
        self.meta = meta
        self.registry = Registry(MemoryDriver(), meta)
        self.recorded: list[PinRecord] = []
        self.digests: dict[str, str] = {}
        self.pinner = Pinner(
            RoutingResolver(LocalResolver(self.registry.manifests, frozenset({HOST})), None),
            self.save,
        )

    async def save(self, pins: Any) -> None:
        self.recorded.extend(pins)
        await self.registry.pins.record(pins)

    async def push(self, repository: str, tag: str, seed: str) -> str:
        record = manifest_record(seed)
        await self.meta.put_manifest(repository, record, tag, ACTOR)
        self.digests[f"{HOST}/{repository}:{tag}"] = record.digest
        return record.digest

    async def admit(self, body: bytes) -> dict[str, Any]:
        response = (await self.pinner.review(parse_review(body))).to_review()["response"]
        await self.pinner.drain()
        return response


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    meta = SQLiteMetadata(tmp_path / "m.db")
    environment = Env(meta)
    await environment.push("team/app", "today", "app-1")
    await environment.push("team/sidecar", "1.0", "side-1")
    yield environment
    await meta.close()


def decoded(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


PREFIX = {
    "Pod": "/spec",
    "PodTemplate": "/template/spec",
    "CronJob": "/spec/jobTemplate/spec/template/spec",
}


@pytest.mark.parametrize("kind", sorted(GROUPS))
async def test_every_kind_is_pinned_exactly(env: Env, kind: str) -> None:
    spec = pod_spec([APP, PINNED, SIDE], init=[SIDE, APP], ephemeral=[APP] if kind == "Pod" else [])
    obj = workload(kind, spec)
    response = await env.admit(review(obj))
    assert response["allowed"] is True
    prefix = PREFIX.get(kind, "/spec/template/spec")
    app, side = env.digests[APP], env.digests[SIDE]
    expected = [
        {"op": "replace", "path": f"{prefix}/initContainers/0/image", "value": f"{SIDE}@{side}"},
        {"op": "replace", "path": f"{prefix}/initContainers/1/image", "value": f"{APP}@{app}"},
        {"op": "replace", "path": f"{prefix}/containers/0/image", "value": f"{APP}@{app}"},
        {"op": "replace", "path": f"{prefix}/containers/2/image", "value": f"{SIDE}@{side}"},
    ]
    if kind == "Pod":
        expected.append(
            {
                "op": "replace",
                "path": f"{prefix}/ephemeralContainers/0/image",
                "value": f"{APP}@{app}",
            }
        )
    assert decoded(response) == expected
    # Nothing but the images changed, and admitting the result again changes nothing.
    patched = apply_patch(obj, decoded(response))
    assert _without_images(patched) == _without_images(obj)
    again = await env.admit(review(patched, operation="UPDATE", old=obj))
    assert again["allowed"] is True and "patch" not in again


def _without_images(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_images(v) for k, v in value.items() if k != "image"}
    if isinstance(value, list):
        return [_without_images(v) for v in value]
    return value


async def test_ephemeral_containers_subresource_patches_only_them(env: Env) -> None:
    obj = workload("Pod", pod_spec([APP], ephemeral=[SIDE]))
    response = await env.admit(review(obj, operation="UPDATE", sub_resource="ephemeralcontainers"))
    assert decoded(response) == [
        {
            "op": "replace",
            "path": "/spec/ephemeralContainers/0/image",
            "value": f"{SIDE}@{env.digests[SIDE]}",
        }
    ]


@pytest.mark.parametrize(
    ("operation", "sub_resource"),
    [("UPDATE", "status"), ("UPDATE", "scale"), ("DELETE", None), ("CONNECT", None)],
)
async def test_other_subresources_and_operations_are_untouched(
    env: Env, operation: str, sub_resource: str | None
) -> None:
    obj = workload("Deployment", pod_spec([APP]))
    response = await env.admit(review(obj, operation=operation, sub_resource=sub_resource))
    assert response == {"uid": response["uid"], "allowed": True}
    assert env.recorded == []


async def test_images_with_a_digest_are_never_resolved(env: Env) -> None:
    tagged_and_pinned = f"{HOST}/team/unknown:tag@sha256:{'f' * 64}"
    obj = workload("Pod", pod_spec([PINNED, tagged_and_pinned]))
    response = await env.admit(review(obj))
    assert response["allowed"] is True and "patch" not in response


async def test_pins_are_recorded_with_the_workload(env: Env) -> None:
    obj = workload("Deployment", pod_spec([APP, SIDE]), name=None)  # generateName
    await env.admit(review(obj))
    pins = await env.registry.pins.list("prod", f"{HOST}/team/app", "today", None, None)
    assert len(pins) == 1
    pin = pins[0]
    assert (pin.kind, pin.name, pin.container, pin.container_kind) == (
        "Deployment",
        "web-*",
        "c0",
        "containers",
    )
    assert (pin.image, pin.digest, pin.source, pin.user) == (
        APP,
        env.digests[APP],
        "local",
        "alice@example.com",
    )


async def test_dry_run_pins_but_records_nothing(env: Env) -> None:
    response = await env.admit(review(workload("Pod", pod_spec([APP])), dry_run=True))
    assert decoded(response)
    assert env.recorded == []


async def test_a_moved_tag_pins_new_objects_to_its_new_digest(env: Env) -> None:
    before = env.digests[APP]
    first = await env.admit(review(workload("Pod", pod_spec([APP]))))
    moved = await env.push("team/app", "today", "app-2")
    second = await env.admit(review(workload("Pod", pod_spec([APP]))))
    assert decoded(first)[0]["value"] == f"{APP}@{before}"
    assert decoded(second)[0]["value"] == f"{APP}@{moved}"
    assert moved != before


async def test_unresolvable_images_refuse_the_object_by_default(env: Env) -> None:
    obj = workload(
        "Pod", pod_spec([APP, f"{HOST}/team/missing:1", "docker.io/library/nginx", "Bad:Ref"])
    )
    response = await env.admit(review(obj))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert response["status"]["code"] == 403
    assert 'container "c1" (containers) image "registry.test:5000/team/missing:1"' in message
    assert "not in this registry" in message
    assert "resolving other registries is turned off" in message
    assert 'image "Bad:Ref"' in message and "invalid image reference" in message
    assert env.recorded == []


async def test_warn_mode_admits_unpinned_with_warnings(env: Env) -> None:
    env.pinner.on_failure = "warn"
    obj = workload("Pod", pod_spec([APP, f"{HOST}/team/missing:1"]))
    response = await env.admit(review(obj))
    assert response["allowed"] is True
    assert [op["path"] for op in decoded(response)] == ["/spec/containers/0/image"]
    assert len(response["warnings"]) == 1 and "team/missing:1" in response["warnings"][0]


class SlowResolver:
    """A resolver that never answers (a registry that hangs)."""

    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution:
        await asyncio.Event().wait()
        raise AssertionError("not reached")


async def test_resolution_has_a_deadline(env: Env) -> None:
    pinner = Pinner(SlowResolver(), deadline=0.2)
    response = (
        await pinner.review(parse_review(review(workload("Pod", pod_spec([APP])))))
    ).to_review()["response"]
    assert response["allowed"] is False
    assert "timed out after 0.2 s" in response["status"]["message"]


@pytest.mark.parametrize(
    ("written", "pinned"),
    [
        (f"{HOST}/team/app", f"{HOST}/team/app:latest"),
        (f"{HOST}/team/app:latest", f"{HOST}/team/app:latest"),
        ("localhost:5000/team/app", "localhost:5000/team/app:latest"),
        ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
        ("nginx", "nginx:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
    ],
)
def test_pinned_image_spells_out_the_tag_it_means(written: str, pinned: str) -> None:
    digest = "sha256:" + "c" * 64
    assert pinned_image(written, digest) == f"{pinned}@{digest}"
    # The same repository and tag as what was written, now with the digest.
    assert parse_reference(pinned_image(written, digest)) == dataclasses.replace(
        parse_reference(written), digest=digest
    )


async def test_an_implicit_latest_stays_visible_to_the_validator(env: Env) -> None:
    latest = await env.push("team/app", "latest", "app-latest")
    implicit, explicit = f"{HOST}/team/app", f"{HOST}/team/app:latest"
    obj = workload("Deployment", pod_spec([implicit, explicit, APP]))
    response = await env.admit(review(obj))
    assert [op["value"] for op in decoded(response)] == [
        f"{explicit}@{latest}",
        f"{explicit}@{latest}",
        f"{APP}@{env.digests[APP]}",
    ]
    # What the validating webhook then sees (it runs on the pinned object): "latest" in both.
    pinned = apply_patch(obj, decoded(response))
    rules = parse_rules([{"name": "no-latest", "namespaces": "prod", "refuse_latest": True}])
    tag_mode = local_tag_mode(Policy.from_dict({"default": "mutable"}), {HOST})
    verdict = validate(parse_review(review(pinned)), rules, tag_mode)
    assert verdict.allowed is False
    assert verdict.message == (
        'moorage refused this Deployment: rule "no-latest": container "c0" (containers) image '
        f'"{explicit}@{latest}" uses the tag "latest": name a version, or a digest without a tag '
        '(image@sha256:...); rule "no-latest": container "c1" (containers) image '
        f'"{explicit}@{latest}" uses the tag "latest": name a version, or a digest without a tag '
        "(image@sha256:...)"
    )
    # The pin records what was written, and the tag it meant.
    pins = await env.registry.pins.list("prod", f"{HOST}/team/app", "latest", None, None)
    assert sorted(p.image for p in pins) == [implicit, explicit]
