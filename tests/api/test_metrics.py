"""GET /metrics of a real registry app, in process: after real requests, the counters moved by
exactly what was asked (by endpoint kind, method and status, never the path), bodies' bytes
are counted, upload requests in flight show, tag refusals are counted by rule, and with
``[metrics] enabled = false`` nothing is served or counted.

Every app of the test process records into the same metrics (``moorage.metrics.current()``),
so the tests compare scrapes taken before and after."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from moorage.metrics import CONTENT_TYPE
from tests.support.app import (
    Client,
    MakeEnv,
    RegistryEnv,
    assert_error,
    install,
    push_blob,
    push_image,
    start_upload,
)
from tests.support.images import seeded_image
from tests.support.metrics import Scrape, sample
from tests.support.waiting import wait_until_async

REQUESTS = "moorage_http_requests_total"
DURATION = "moorage_http_request_duration_seconds"


async def scrape(client: Client) -> Scrape:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return Scrape.parse(await response.text())


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def test_requests_are_counted_by_endpoint_kind_method_and_status(
    fs_env: RegistryEnv,
) -> None:
    client = fs_env.client
    pushed = await push_image(client, "team/app", seeded_image("metrics", layers=1), "v1")
    before = await scrape(client)
    for _ in range(5):
        assert (await client.get("/v2/team/app/manifests/v1")).status == 200
    assert (await client.head("/v2/team/app/manifests/v1")).status == 200
    assert (await client.get(f"/v2/team/app/manifests/{pushed.digest}")).status == 200
    await assert_error(await client.get("/v2/team/app/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    await assert_error(await client.get("/v2/team/app/nothing/here"), 404, "UNSUPPORTED")
    assert (await client.request("PROPFIND", "/v2/team/app/tags/list")).status == 405
    assert (await client.get("/v2/")).status == 200
    # Two endpoints of one kind count into one series.
    assert (await client.get("/v2/_oci/ext/discover")).status == 200
    assert (await client.get("/v2/team/app/_oci/ext/discover")).status == 200
    after = await scrape(client)

    def requests(route: str, method: str, status: str) -> float:
        return moved(before, after, REQUESTS, route=route, method=method, status=status)

    assert requests("manifest", "GET", "200") == 6
    assert requests("manifest", "HEAD", "200") == 1
    assert requests("manifest", "GET", "404") == 1
    assert requests("unknown", "GET", "404") == 1
    assert requests("tags", "other", "405") == 1
    assert requests("base", "GET", "200") == 1
    assert requests("extension", "GET", "200") == 2
    assert moved(before, after, f"{DURATION}_count", route="manifest", method="GET") == 7
    assert moved(before, after, f"{DURATION}_sum", route="manifest", method="GET") > 0
    # No label carries a repository, a tag or a digest.
    for name, labels in after.samples:
        for label, value in labels:
            assert "team" not in value and "sha256" not in value, (name, label, value)
    # Five GETs by tag and one by digest sent the manifest's bytes; HEAD and the 404 their
    # empty or small bodies.
    sent = moved(before, after, "moorage_http_sent_bytes_total", route="manifest")
    assert 6 * len(pushed.manifest) <= sent < 6 * len(pushed.manifest) + 1000


async def test_blob_bytes_received_and_sent(fs_env: RegistryEnv) -> None:
    client = fs_env.client
    data = os.urandom(300_000)
    before = await scrape(client)
    digest = await push_blob(client, "team/blobs", data)  # POST, then PUT with the bytes
    response = await client.get(f"/v2/team/blobs/blobs/{digest}")
    assert await response.read() == data
    response = await client.get(f"/v2/team/blobs/blobs/{digest}", headers={"Range": "bytes=0-999"})
    assert response.status == 206 and len(await response.read()) == 1000
    assert (await client.head(f"/v2/team/blobs/blobs/{digest}")).status == 200
    after = await scrape(client)
    assert moved(before, after, "moorage_http_received_bytes_total", route="upload") == len(data)
    assert moved(before, after, "moorage_http_sent_bytes_total", route="blob") == len(data) + 1000
    assert moved(before, after, REQUESTS, route="uploads", method="POST", status="202") == 1
    assert moved(before, after, REQUESTS, route="upload", method="PUT", status="201") == 1
    assert moved(before, after, REQUESTS, route="blob", method="GET", status="206") == 1


async def test_upload_requests_in_flight(fs_env: RegistryEnv) -> None:
    client = fs_env.client
    location = await start_upload(client, "team/slow")
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await go_on.wait()
        yield b"y" * 1000

    baseline = (await scrape(client)).value("moorage_uploads_in_flight")
    patch = asyncio.create_task(
        client.patch(location, data=body(), headers={"Content-Type": "application/octet-stream"})
    )

    async def in_flight() -> bool:
        return (await scrape(client)).value("moorage_uploads_in_flight") == baseline + 1

    await wait_until_async(in_flight, "the PATCH to be counted in flight", timeout=10)
    go_on.set()
    response = await patch
    assert response.status == 202, await response.text()
    assert (await scrape(client)).value("moorage_uploads_in_flight") == baseline


async def test_tag_refusals_are_counted_by_rule(make_env: MakeEnv) -> None:
    env = await make_env()
    client = env.client
    await install(client)  # the README's rules: "versions" freezes 1.0 everywhere
    await push_image(client, "prod/app", seeded_image("one", layers=1), "1.0")
    await push_image(client, "prod/app", seeded_image("one", layers=1), "build")
    before = await scrape(client)
    other = seeded_image("two", layers=1)
    for blob in other.blobs:
        await push_blob(client, "prod/app", blob)
    for tag in ("1.0", "build"):  # "build" is frozen by "prod", which names no tags
        response = await client.put(
            f"/v2/prod/app/manifests/{tag}",
            data=other.manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        await assert_error(response, 403, "DENIED")
    after = await scrape(client)
    assert moved(before, after, "moorage_tag_refusals_total", rule="versions") == 1
    assert moved(before, after, "moorage_tag_refusals_total", rule="prod") == 1
    assert moved(before, after, REQUESTS, route="manifest", method="PUT", status="403") == 2

    frozen = await make_env()
    await install(frozen.client, {"default": "immutable"})
    await push_image(frozen.client, "any/app", seeded_image("one", layers=1), "today")
    for blob in other.blobs:
        await push_blob(frozen.client, "any/app", blob)
    before = await scrape(frozen.client)
    response = await frozen.client.put(
        "/v2/any/app/manifests/today",
        data=other.manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    await assert_error(response, 403, "DENIED")
    after = await scrape(frozen.client)
    assert moved(before, after, "moorage_tag_refusals_total", rule="(default)") == 1


async def test_disabled_metrics_are_neither_served_nor_counted(make_env: MakeEnv) -> None:
    env = await make_env(metrics={"enabled": False})
    before = sample(REQUESTS, route="base", method="GET", status="200")
    assert (await env.client.get("/v2/")).status == 200
    assert (await env.client.get("/metrics")).status == 404
    assert sample(REQUESTS, route="base", method="GET", status="200") == before
    assert (await env.client.get("/readyz")).status == 200  # probes stay
