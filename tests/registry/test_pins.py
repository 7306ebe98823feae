"""moorage.registry.pins: pins recorded, and listed newest first by namespace and image."""

from __future__ import annotations

from moorage.model import PinRecord
from moorage.registry.service import Registry


def pin(namespace: str, repository: str, tag: str, at: float) -> PinRecord:
    return PinRecord(
        at=at,
        namespace=namespace,
        kind="Deployment",
        name="web",
        container_kind="container",
        container="app",
        image=f"{repository}:{tag}",
        repository=repository,
        tag=tag,
        digest="sha256:" + "a" * 64,
        source="local",
        request_uid="uid",
        user="kube",
    )


async def test_pins_are_listed_newest_first_by_filter(registry: Registry) -> None:
    await registry.pins.record([pin("prod", "r.test/app", "v1", 1.0)])
    await registry.pins.record(
        [pin("prod", "r.test/app", "v2", 2.0), pin("dev", "r.test/app", "v1", 3.0)]
    )
    everything = await registry.pins.list(None, None, None, None, None)
    assert [(p.namespace, p.tag) for p in everything] == [
        ("dev", "v1"),
        ("prod", "v2"),
        ("prod", "v1"),
    ]
    prod = await registry.pins.list("prod", None, None, None, None)
    assert [p.tag for p in prod] == ["v2", "v1"]
    v1 = await registry.pins.list(None, "r.test/app", "v1", None, None)
    assert [p.namespace for p in v1] == ["dev", "prod"]
    first = await registry.pins.list(None, None, None, 1, None)
    assert [p.tag for p in first] == ["v1"] and first[0].namespace == "dev"
    older = await registry.pins.list(None, None, None, None, first[0].id)
    assert [p.id for p in older] == [p.id for p in everything[1:]]
