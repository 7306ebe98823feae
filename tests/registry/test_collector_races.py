"""Garbage collection while clients push and mount the very bytes it is deleting.

The collector stops between each of its steps until the clients have done more work, so
pushes and mounts land in every window: while repositories are swept, records retired, and
bytes marked and deleted. Whatever the interleaving, every image a client pushed is served
whole afterwards, and no blob the registry records has lost its bytes.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from moorage.digest import Digest
from moorage.registry.layout import blob_key
from tests.support.app import Client, RegistryEnv, assert_image_intact, push_image, with_query
from tests.support.collecting import GRACE, UNTAGGED, MakeGcEnv, collect
from tests.support.images import Blob, Image, seeded_image
from tests.support.waiting import wait_until_async

RACING = [("filesystem", "sqlite"), ("s3", "postgres")]
PUSHERS = 6
MOUNTERS = 3


class Attempts:
    """Uploads tried so far, refused ones included (503 while the bytes are deleted)."""

    count = 0
    refused = 0


async def upload(client: Client, name: str, blob: Blob) -> None:
    """Upload a blob, again if garbage collection was deleting its bytes (503)."""
    while True:
        Attempts.count += 1
        resp = await client.post(
            f"/v2/{name}/blobs/uploads/?digest={blob.digest}",
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if resp.status == 201:
            return
        assert resp.status == 503, await resp.text()
        Attempts.refused += 1
        await asyncio.sleep(0)


async def mount_or_upload(client: Client, name: str, blob: Blob, source: str) -> bool:
    """Mount a blob from ``source``, or upload it if the registry has it no more; whether
    it was mounted."""
    resp = await client.post(
        with_query(f"/v2/{name}/blobs/uploads/", mount=blob.digest, **{"from": source}),
        data=b"",
    )
    if resp.status == 201:
        return True
    assert resp.status == 202, await resp.text()
    await client.delete(resp.headers["Location"])
    await upload(client, name, blob)
    return False


async def push(client: Client, name: str, image: Image, tag: str, source: str | None) -> None:
    for blob in image.all_blobs:
        if source is None:
            await upload(client, name, blob)
        else:
            await mount_or_upload(client, name, blob, source)
    resp = await client.put(
        f"/v2/{name}/manifests/{tag}",
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("combination", RACING, ids=["-".join(c) for c in RACING])
async def test_pushes_and_mounts_during_collection_lose_nothing(
    make_gc_env: MakeGcEnv, combination: tuple[str, str]
) -> None:
    env: RegistryEnv = await make_gc_env(*combination)
    client = env.client
    # Garbage with bytes the clients will push again: images pushed, then deleted.
    images = [seeded_image(f"shared-{i}", layers=2) for i in range(32)]
    for i, image in enumerate(images):
        await push_image(client, "old/x", image, f"t{i}")
    deleted, kept = images[:24], images[24:]
    for image in deleted:
        resp = await client.delete(f"/v2/old/x/manifests/{image.digest}")
        assert resp.status == 202, await resp.text()
    env.clock.advance(UNTAGGED + 100)
    await collect(env)  # their records become deletions...
    env.clock.advance(GRACE + 1)  # ... due now: this run deletes their bytes

    stop = asyncio.Event()
    pushed: list[tuple[str, str, Image]] = []

    async def client_loop(number: int, mounting: bool) -> None:
        name = f"new/{'m' if mounting else 'p'}{number}"
        choose = random.Random(f"{combination}-{mounting}-{number}")
        for turn in range(10_000):
            if stop.is_set():
                return
            image = choose.choice(images)
            await push(client, name, image, f"r{turn}", source="old/x" if mounting else None)
            pushed.append((name, f"r{turn}", image))

    async def pause(step: str) -> None:
        target = Attempts.count + 6
        await wait_until_async(lambda: Attempts.count >= target, f"clients to try during {step}")

    Attempts.count = Attempts.refused = 0
    clients = [asyncio.create_task(client_loop(n, False)) for n in range(PUSHERS)]
    clients += [asyncio.create_task(client_loop(n, True)) for n in range(MOUNTERS)]
    try:
        collector = env.registry.collector(hosts=[], pause=pause)
        report = await collector.run()
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert report.deleted, "the run deleted no bytes: the test tests nothing"
    assert pushed
    for name, tag, image in pushed:
        await assert_image_intact(client, name, image, [tag])
    for image in kept:
        await assert_image_intact(client, "old/x", image)
    for image in images:
        for blob in image.all_blobs:
            if await env.registry.meta.find_blob(blob.digest) is not None:
                key = blob_key(Digest.parse(blob.digest))
                assert await env.registry.storage.stat(key) == blob.size, blob.digest
