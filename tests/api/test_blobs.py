"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>, with Range requests."""

from __future__ import annotations

import pytest

from tests.support.app import Client, MakeEnv, RegistryEnv, assert_error, push_blob
from tests.support.images import digest_of, layer_blob

NAME = "library/blobs"
BLOB = layer_blob("range-me", 10_000)


@pytest.fixture
async def pushed(client: Client) -> str:
    return await push_blob(client, NAME, BLOB)


async def test_get_returns_the_bytes_and_digest(client: Client, pushed: str) -> None:
    resp = await client.get(f"/v2/{NAME}/blobs/{pushed}")
    assert resp.status == 200
    assert await resp.read() == BLOB.data
    assert resp.headers["Docker-Content-Digest"] == BLOB.digest
    assert resp.headers["Content-Length"] == str(BLOB.size)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_head_returns_size_and_digest_without_body(client: Client, pushed: str) -> None:
    resp = await client.head(f"/v2/{NAME}/blobs/{pushed}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(BLOB.size)
    assert resp.headers["Docker-Content-Digest"] == BLOB.digest
    assert await resp.read() == b""


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=2-5", 2, 5),
        ("bytes=100-", 100, 9_999),
        ("bytes=-4", 9_996, 9_999),
        ("bytes=9000-20000", 9_000, 9_999),
        ("bytes=9999-9999", 9_999, 9_999),
    ],
)
async def test_range_gives_206_with_content_range(
    client: Client, pushed: str, header: str, start: int, end: int
) -> None:
    resp = await client.get(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": header})
    assert resp.status == 206, await resp.text()
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{BLOB.size}"
    body = await resp.read()
    assert body == BLOB.data[start : end + 1]
    assert resp.headers["Content-Length"] == str(end - start + 1)
    assert resp.headers["Docker-Content-Digest"] == BLOB.digest


async def test_suffix_range_longer_than_the_blob_gives_all_of_it(
    client: Client, pushed: str
) -> None:
    resp = await client.get(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": "bytes=-50000"})
    assert resp.status in (200, 206)
    assert await resp.read() == BLOB.data
    if resp.status == 206:
        assert resp.headers["Content-Range"] == f"bytes 0-9999/{BLOB.size}"


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-30000", "bytes=10000-10000"])
async def test_unsatisfiable_range_is_416(client: Client, pushed: str, header: str) -> None:
    resp = await client.get(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": header})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{BLOB.size}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=-"])
async def test_range_that_is_not_one_simple_byte_range_gives_the_whole_blob(
    client: Client, pushed: str, header: str
) -> None:
    resp = await client.get(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": header})
    assert resp.status == 200
    assert await resp.read() == BLOB.data
    assert resp.headers["Content-Length"] == str(BLOB.size)


async def test_range_on_head(client: Client, pushed: str) -> None:
    resp = await client.head(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": "bytes=10-19"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 10-19/{BLOB.size}"
    assert resp.headers["Content-Length"] == "10"


async def test_large_blob_round_trip(client: Client) -> None:
    big = layer_blob("big", 3 * 1024 * 1024 + 17)
    await push_blob(client, NAME, big)
    resp = await client.get(f"/v2/{NAME}/blobs/{big.digest}")
    assert resp.status == 200
    assert await resp.read() == big.data
    resp = await client.get(
        f"/v2/{NAME}/blobs/{big.digest}", headers={"Range": f"bytes={big.size - 5}-"}
    )
    assert resp.status == 206
    assert await resp.read() == big.data[-5:]


async def test_empty_blob(client: Client) -> None:
    digest = await push_blob(client, NAME, b"")
    assert digest == digest_of(b"")
    resp = await client.get(f"/v2/{NAME}/blobs/{digest}")
    assert resp.status == 200
    assert await resp.read() == b""
    assert resp.headers["Content-Length"] == "0"


async def test_unknown_blob_is_404(client: Client) -> None:
    resp = await client.get(f"/v2/{NAME}/blobs/{digest_of(b'never pushed')}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")
    resp = await client.head(f"/v2/{NAME}/blobs/{digest_of(b'never pushed')}")
    assert resp.status == 404


async def test_blob_of_another_repository_is_not_visible(client: Client, pushed: str) -> None:
    resp = await client.get(f"/v2/library/other/blobs/{pushed}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_delete_then_404(client: Client, pushed: str) -> None:
    resp = await client.delete(f"/v2/{NAME}/blobs/{pushed}")
    assert resp.status == 202
    resp = await client.get(f"/v2/{NAME}/blobs/{pushed}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")
    resp = await client.head(f"/v2/{NAME}/blobs/{pushed}")
    assert resp.status == 404
    resp = await client.delete(f"/v2/{NAME}/blobs/{pushed}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_delete_in_one_repository_keeps_it_in_another(client: Client, pushed: str) -> None:
    await push_blob(client, "library/second", BLOB)
    resp = await client.delete(f"/v2/{NAME}/blobs/{pushed}")
    assert resp.status == 202
    resp = await client.get(f"/v2/library/second/blobs/{pushed}")
    assert resp.status == 200
    assert await resp.read() == BLOB.data


async def test_delete_disabled_is_405(make_env: MakeEnv) -> None:
    env: RegistryEnv = await make_env(delete={"enabled": False})
    digest = await push_blob(env.client, NAME, BLOB)
    resp = await env.client.delete(f"/v2/{NAME}/blobs/{digest}")
    await assert_error(resp, 405, "UNSUPPORTED")
    resp = await env.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert resp.status == 200
