"""PinStore (moorage.meta.protocols), against every backend."""

from __future__ import annotations

from dataclasses import replace

from moorage.meta.protocols import MetadataStore
from moorage.model import PinRecord
from tests.meta.helpers import digest


def pin(n: int, namespace: str = "web", repository: str = "team/app", tag: str = "v1") -> PinRecord:
    return PinRecord(
        at=1000.0 + n,
        namespace=namespace,
        kind="Deployment",
        name=f"app-{n}",
        container_kind="containers",
        container="app",
        image=f"registry.example/{repository}:{tag}",
        repository=repository,
        tag=tag,
        digest=digest(f"pinned-{n}"),
        source="local",
        request_uid=f"uid-{n}",
        user="system:serviceaccount:kube-system:deployment-controller",
    )


async def test_pins_are_listed_newest_first_and_filtered(meta: MetadataStore) -> None:
    await meta.record_pins([])
    assert await meta.list_pins(None, None, None, None, None) == []
    pins = [pin(0), pin(1, namespace="jobs"), pin(2, tag="v2"), pin(3, repository="team/db")]
    await meta.record_pins(pins[:2])  # in one call, in the order given
    await meta.record_pins(pins[2:])
    listed = await meta.list_pins(None, None, None, None, None)
    assert [p.name for p in listed] == ["app-3", "app-2", "app-1", "app-0"]
    assert all(p.id > 0 for p in listed)
    assert [p.id for p in listed] == sorted((p.id for p in listed), reverse=True)
    newest_first = zip(pins[::-1], listed, strict=True)
    assert listed == [replace(p, id=stored.id) for p, stored in newest_first]

    def names(found: list[PinRecord]) -> list[str]:
        return [p.name for p in found]

    assert names(await meta.list_pins("jobs", None, None, None, None)) == ["app-1"]
    assert names(await meta.list_pins(None, "team/app", "v1", None, None)) == ["app-1", "app-0"]
    assert names(await meta.list_pins("web", "team/app", None, None, None)) == ["app-2", "app-0"]
    assert names(await meta.list_pins(None, None, "v2", None, None)) == ["app-2"]
    assert await meta.list_pins("nobody", None, None, None, None) == []
    # Pages: at most ``limit``, with ids below ``before``.
    assert names(await meta.list_pins(None, None, None, 2, None)) == ["app-3", "app-2"]
    assert names(await meta.list_pins(None, None, None, 2, listed[1].id)) == ["app-1", "app-0"]
    assert names(await meta.list_pins(None, "team/app", None, 1, listed[0].id)) == ["app-2"]
