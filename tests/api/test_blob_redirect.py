"""Blob downloads redirected to presigned URLs of the object store (``storage.s3.redirect``)."""

from __future__ import annotations

import os
import urllib.request

from tests.support.app import MakeEnv, push_blob, push_blob_chunked
from tests.support.images import layer_blob


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as reply:
        return int(reply.status), bytes(reply.read())


async def test_get_redirects_to_a_presigned_url(make_env: MakeEnv) -> None:
    env = await make_env("s3", storage={"s3": {"redirect": True, "redirect_expiry": 60.0}})
    data = os.urandom(3 * 1024 * 1024)
    digest = await push_blob(env.client, "redirect/app", data)
    reply = await env.client.get(f"/v2/redirect/app/blobs/{digest}", allow_redirects=False)
    assert reply.status == 307
    assert reply.headers["Docker-Content-Digest"] == digest
    location = reply.headers["Location"]
    assert location.startswith(env.settings.storage.s3.endpoint or "")
    assert "X-Amz-Signature=" in location
    # The store serves the bytes, ranges included; the signature covers no Range header.
    assert fetch(location) == (200, data)
    status, part = fetch(location, {"Range": "bytes=100-199"})
    assert (status, part) == (206, data[100:200])
    # HEAD is answered by the registry itself, with the size.
    head = await env.client.head(f"/v2/redirect/app/blobs/{digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(data))


async def test_blob_of_several_segments_is_streamed_instead(make_env: MakeEnv) -> None:
    """A blob stored as several segments has no single object to sign: the registry sends it."""
    env = await make_env("s3", storage={"s3": {"redirect": True}})
    blob = layer_blob("segments", size=3 * 1024 * 1024 + 5)
    digest = await push_blob_chunked(env.client, "redirect/chunks", blob, 1024 * 1024 + 1)
    reply = await env.client.get(f"/v2/redirect/chunks/blobs/{digest}", allow_redirects=False)
    assert reply.status == 200
    assert await reply.read() == blob.data


async def test_without_redirect_the_registry_streams(make_env: MakeEnv) -> None:
    env = await make_env("s3")
    data = os.urandom(4096)
    digest = await push_blob(env.client, "redirect/off", data)
    reply = await env.client.get(f"/v2/redirect/off/blobs/{digest}", allow_redirects=False)
    assert reply.status == 200
    assert await reply.read() == data
