"""Blob uploads: monolithic, single POST, chunked, streamed, status, cancel, mount, expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.support.app import (
    Client,
    MakeEnv,
    RegistryEnv,
    assert_error,
    patch_chunk,
    push_blob,
    push_blob_chunked,
    push_blob_single_post,
    push_manifest,
    start_upload,
    stream,
    with_query,
)
from tests.support.images import Blob, config_blob, digest_of, layer_blob, oci_manifest
from tests.support.waiting import wait_until_async

NAME = "team/uploads"
DATA = layer_blob("upload", 30_000)


async def blob_bytes(client: Client, name: str, digest: str) -> bytes:
    resp = await client.get(f"/v2/{name}/blobs/{digest}")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Docker-Content-Digest"] == digest
    return await resp.read()


async def test_post_then_put(client: Client) -> None:
    resp = await client.post(f"/v2/{NAME}/blobs/uploads/", data=b"")
    assert resp.status == 202
    location = resp.headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    uuid.UUID(upload_id)
    assert location == f"/v2/{NAME}/blobs/uploads/{upload_id}"
    assert resp.headers["Docker-Upload-UUID"] == upload_id
    # A 202 keeps Distribution's "0-0" for an empty upload (Docker's client parses it).
    assert resp.headers["Range"] == "0-0"
    assert resp.headers["Upload-Offset"] == "0"
    resp = await client.put(with_query(location, digest=DATA.digest), data=DATA.data)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v2/{NAME}/blobs/{DATA.digest}"
    assert resp.headers["Docker-Content-Digest"] == DATA.digest
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_single_post_with_digest(client: Client) -> None:
    await push_blob_single_post(client, NAME, DATA)
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_single_post_with_streamed_body(client: Client) -> None:
    resp = await client.post(
        f"/v2/{NAME}/blobs/uploads/?digest={DATA.digest}", data=stream(DATA.data)
    )
    assert resp.status == 201, await resp.text()
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_pushing_an_existing_blob_again_is_fine(client: Client) -> None:
    await push_blob(client, NAME, DATA)
    await push_blob(client, NAME, DATA)
    await push_blob_single_post(client, NAME, DATA)
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


@pytest.mark.parametrize("chunk_size", [1, 4096, 10_000, 29_999, 30_000])
async def test_chunked_with_content_range(client: Client, chunk_size: int) -> None:
    blob = DATA if chunk_size > 1 else Blob(DATA.data[:50])
    await push_blob_chunked(client, NAME, blob, chunk_size)
    assert await blob_bytes(client, NAME, blob.digest) == blob.data


async def test_last_chunk_in_the_put(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await patch_chunk(client, location, DATA.data[:20_000], 0)
    assert resp.status == 202
    resp = await client.put(
        with_query(resp.headers["Location"], digest=DATA.digest),
        data=DATA.data[20_000:],
        headers={"Content-Range": "20000-29999", "Content-Length": "10000"},
    )
    assert resp.status == 201, await resp.text()
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_streamed_patch_without_content_range(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await client.patch(location, data=stream(DATA.data[:12_345]))
    assert resp.status == 202, await resp.text()
    assert resp.headers["Range"] == "0-12344"
    resp = await client.patch(resp.headers["Location"], data=stream(DATA.data[12_345:]))
    assert resp.status == 202, await resp.text()
    assert resp.headers["Range"] == f"0-{DATA.size - 1}"
    resp = await client.put(with_query(resp.headers["Location"], digest=DATA.digest))
    assert resp.status == 201, await resp.text()
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_patch_with_plain_body_without_content_range(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await client.patch(location, data=DATA.data)
    assert resp.status == 202, await resp.text()
    assert resp.headers["Range"] == f"0-{DATA.size - 1}"
    resp = await client.put(with_query(location, digest=DATA.digest))
    assert resp.status == 201


async def test_status_is_204_with_range_and_location(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await client.get(location)
    assert resp.status == 204
    assert resp.headers["Location"] == location
    # The status of an empty upload says so exactly: no last byte, the next one is 0.
    assert resp.headers["Range"] == "0--1"
    assert resp.headers["Upload-Offset"] == "0"
    await patch_chunk(client, location, DATA.data[:1000], 0)
    resp = await client.get(location)
    assert resp.status == 204
    assert resp.headers["Location"] == location
    assert resp.headers["Range"] == "0-999"
    assert resp.headers["Upload-Offset"] == "1000"
    assert resp.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]


@pytest.mark.parametrize("bad_start", [0, 500, 1001, 5000])
async def test_out_of_order_or_repeated_chunk_is_416_and_session_survives(
    client: Client, bad_start: int
) -> None:
    location = await start_upload(client, NAME)
    resp = await patch_chunk(client, location, DATA.data[:1000], 0)
    assert resp.status == 202
    resp = await patch_chunk(client, location, DATA.data[bad_start : bad_start + 100], bad_start)
    await assert_error(resp, 416, "BLOB_UPLOAD_INVALID")
    assert resp.headers["Range"] == "0-999"
    assert resp.headers["Location"] == location
    # The session is where it was and still takes the right chunk.
    resp = await client.get(location)
    assert resp.status == 204
    assert resp.headers["Range"] == "0-999"
    resp = await patch_chunk(client, location, DATA.data[1000:], 1000)
    assert resp.status == 202, await resp.text()
    resp = await client.put(with_query(location, digest=DATA.digest))
    assert resp.status == 201, await resp.text()
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_first_chunk_not_at_zero_is_416(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await patch_chunk(client, location, DATA.data[10:20], 10)
    await assert_error(resp, 416, "BLOB_UPLOAD_INVALID")
    assert resp.headers["Range"] == "0--1"
    assert resp.headers["Upload-Offset"] == "0"
    assert resp.headers["Location"] == location
    await push_blob_chunked(client, NAME, DATA, 7000)


async def test_final_put_chunk_out_of_order_is_416(client: Client) -> None:
    location = await start_upload(client, NAME)
    await patch_chunk(client, location, DATA.data[:1000], 0)
    resp = await client.put(
        with_query(location, digest=DATA.digest),
        data=DATA.data[2000:],
        headers={"Content-Range": f"2000-{DATA.size - 1}"},
    )
    await assert_error(resp, 416, "BLOB_UPLOAD_INVALID")
    assert resp.headers["Range"] == "0-999"
    resp = await client.put(
        with_query(location, digest=DATA.digest),
        data=DATA.data[1000:],
        headers={"Content-Range": f"1000-{DATA.size - 1}"},
    )
    assert resp.status == 201, await resp.text()


async def test_cancel_then_404(client: Client) -> None:
    location = await start_upload(client, NAME)
    await patch_chunk(client, location, DATA.data[:1000], 0)
    resp = await client.delete(location)
    assert resp.status == 204
    resp = await client.get(location)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await patch_chunk(client, location, DATA.data[1000:2000], 1000)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await client.put(with_query(location, digest=DATA.digest), data=DATA.data)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await client.delete(location)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await client.get(f"/v2/{NAME}/blobs/{DATA.digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_completed_session_is_gone(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await client.put(with_query(location, digest=DATA.digest), data=DATA.data)
    assert resp.status == 201
    resp = await client.get(location)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await client.put(with_query(location, digest=DATA.digest), data=DATA.data)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_mount_from_another_repository(client: Client) -> None:
    await push_blob(client, "team/source", DATA)
    resp = await client.post(
        f"/v2/{NAME}/blobs/uploads/?mount={DATA.digest}&from=team/source", data=b""
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v2/{NAME}/blobs/{DATA.digest}"
    assert resp.headers["Docker-Content-Digest"] == DATA.digest
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_mount_without_from_when_known(client: Client) -> None:
    await push_blob(client, "team/source", DATA)
    resp = await client.post(f"/v2/{NAME}/blobs/uploads/?mount={DATA.digest}", data=b"")
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v2/{NAME}/blobs/{DATA.digest}"
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_mount_of_unknown_blob_starts_a_session(client: Client) -> None:
    resp = await client.post(
        f"/v2/{NAME}/blobs/uploads/?mount={DATA.digest}&from=team/source", data=b""
    )
    assert resp.status == 202, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith(f"/v2/{NAME}/blobs/uploads/")
    resp = await client.put(with_query(location, digest=DATA.digest), data=DATA.data)
    assert resp.status == 201
    resp = await client.post(f"/v2/{NAME}/blobs/uploads/?mount={digest_of(b'x')}", data=b"")
    assert resp.status == 202


async def test_mount_from_a_repository_without_the_blob_is_202(client: Client) -> None:
    await push_blob(client, "team/source", DATA)
    await push_blob(client, "team/elsewhere", Blob(b"something else"))
    resp = await client.post(
        f"/v2/{NAME}/blobs/uploads/?mount={DATA.digest}&from=team/elsewhere", data=b""
    )
    assert resp.status == 202
    resp = await client.get(f"/v2/{NAME}/blobs/{DATA.digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_automatic_mount_can_be_disabled(make_env: MakeEnv) -> None:
    env = await make_env(mount={"automatic": False})
    await push_blob(env.client, "team/source", DATA)
    resp = await env.client.post(f"/v2/{NAME}/blobs/uploads/?mount={DATA.digest}", data=b"")
    assert resp.status == 202
    resp = await env.client.get(f"/v2/{NAME}/blobs/{DATA.digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_wrong_digest_on_put_is_digest_invalid(client: Client) -> None:
    location = await start_upload(client, NAME)
    wrong = digest_of(b"other content")
    resp = await client.put(with_query(location, digest=wrong), data=DATA.data)
    await assert_error(resp, 400, "DIGEST_INVALID")
    for digest in (wrong, DATA.digest):
        resp = await client.get(f"/v2/{NAME}/blobs/{digest}")
        await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_wrong_digest_after_chunks_is_digest_invalid(client: Client) -> None:
    location = await start_upload(client, NAME)
    await patch_chunk(client, location, DATA.data[:1000], 0)
    resp = await client.put(with_query(location, digest=digest_of(DATA.data[:999])))
    await assert_error(resp, 400, "DIGEST_INVALID")
    resp = await client.get(f"/v2/{NAME}/blobs/{digest_of(DATA.data[:1000])}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_wrong_digest_on_single_post(client: Client) -> None:
    resp = await client.post(
        f"/v2/{NAME}/blobs/uploads/?digest={digest_of(b'nope')}", data=DATA.data
    )
    await assert_error(resp, 400, "DIGEST_INVALID")
    resp = await client.get(f"/v2/{NAME}/blobs/{DATA.digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_put_without_digest_keeps_the_session(client: Client) -> None:
    location = await start_upload(client, NAME)
    await patch_chunk(client, location, DATA.data, 0)
    resp = await client.put(location)
    await assert_error(resp, 400, "DIGEST_INVALID")
    resp = await client.get(location)
    assert resp.status == 204
    assert resp.headers["Range"] == f"0-{DATA.size - 1}"
    resp = await client.put(with_query(location, digest=DATA.digest))
    assert resp.status == 201


async def test_sha512_blobs(client: Client) -> None:
    monolithic = layer_blob("sha512-mono", 5000, algorithm="sha512")
    chunked = layer_blob("sha512-chunked", 9000, algorithm="sha512")
    single = layer_blob("sha512-single", 777, algorithm="sha512")
    assert monolithic.digest.startswith("sha512:") and len(monolithic.digest) == 7 + 128
    await push_blob(client, NAME, monolithic)
    await push_blob_chunked(client, NAME, chunked, 2000)
    await push_blob_single_post(client, NAME, single)
    for blob in (monolithic, chunked, single):
        assert await blob_bytes(client, NAME, blob.digest) == blob.data
    # The same bytes are not known under their sha256 digest.
    resp = await client.get(f"/v2/{NAME}/blobs/{digest_of(monolithic.data)}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


async def test_sha512_wrong_digest(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await client.put(
        with_query(location, digest=digest_of(b"other", "sha512")), data=DATA.data
    )
    await assert_error(resp, 400, "DIGEST_INVALID")


async def test_sha512_manifest(client: Client) -> None:
    config = config_blob("sha512", algorithm="sha512")
    layer = layer_blob("sha512-layer", 3000, algorithm="sha512")
    await push_blob(client, NAME, config)
    await push_blob(client, NAME, layer)
    manifest = oci_manifest(config, [layer])
    digest = digest_of(manifest, "sha512")
    resp = await push_manifest(client, NAME, digest, manifest, algorithm="sha512")
    assert resp.headers["Docker-Content-Digest"] == digest
    resp = await client.get(f"/v2/{NAME}/manifests/{digest}")
    assert resp.status == 200
    assert await resp.read() == manifest
    assert resp.headers["Docker-Content-Digest"] == digest
    # A sha512-pushed manifest is not silently known by its sha256 digest as well, or the
    # other way round: each digest names exactly what was pushed under it.
    resp = await client.put(
        f"/v2/{NAME}/manifests/{digest_of(manifest, 'sha512')[:-1]}0",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    await assert_error(resp, 400, "DIGEST_INVALID")


def expire(env: RegistryEnv, seconds: float) -> None:
    """Move the upload service's clock ``seconds`` into the future."""
    real = time.time
    env.registry.uploads.sessions.clock = lambda: real() + seconds


async def test_stale_session_is_unknown(make_env: MakeEnv) -> None:
    env = await make_env(uploads={"ttl": 60.0})
    client = env.client
    location = await start_upload(client, NAME)
    await patch_chunk(client, location, DATA.data[:1000], 0)
    expire(env, 3600)
    resp = await client.get(location)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await patch_chunk(client, location, DATA.data[1000:2000], 1000)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    # Being told about the session must not bring it back to life.
    resp = await client.get(location)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await client.put(with_query(location, digest=DATA.digest), data=DATA.data[1000:])
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    resp = await client.get(f"/v2/{NAME}/blobs/{DATA.digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize("driver", ["filesystem", "memory"])
async def test_purge_removes_expired_sessions_only(make_env: MakeEnv, driver: str) -> None:
    env = await make_env(driver, uploads={"ttl": 60.0})
    client = env.client
    old = await start_upload(client, NAME)
    await patch_chunk(client, old, DATA.data[:1000], 0)
    expire(env, 3600)
    fresh = await start_upload(client, NAME)
    assert await env.registry.uploads.purge_expired() == 1
    env.registry.uploads.sessions.clock = time.time
    resp = await client.get(old)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    old_id = old.rsplit("/", 1)[1]
    assert await env.registry.storage.stat(f"uploads/{old_id}") is None
    resp = await client.get(fresh)
    assert resp.status == 204
    resp = await client.put(with_query(fresh, digest=DATA.digest), data=DATA.data)
    assert resp.status == 201


async def test_tiny_ttl_expires_sessions(make_env: MakeEnv) -> None:
    env = await make_env(uploads={"ttl": 0.001})
    location = await start_upload(env.client, NAME)
    expire(env, 0.01)
    resp = await env.client.get(location)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_uploads_in_parallel_sessions_do_not_mix(client: Client) -> None:
    first, second = layer_blob("first", 5000), layer_blob("second", 6000)
    loc1 = await start_upload(client, NAME)
    loc2 = await start_upload(client, NAME)
    assert loc1 != loc2
    await patch_chunk(client, loc1, first.data[:2500], 0)
    await patch_chunk(client, loc2, second.data[:3000], 0)
    await patch_chunk(client, loc1, first.data[2500:], 2500)
    await patch_chunk(client, loc2, second.data[3000:], 3000)
    assert (await client.put(with_query(loc2, digest=second.digest))).status == 201
    assert (await client.put(with_query(loc1, digest=first.digest))).status == 201
    assert await blob_bytes(client, NAME, first.digest) == first.data
    assert await blob_bytes(client, NAME, second.digest) == second.data


async def test_empty_blob_upload(client: Client) -> None:
    location = await start_upload(client, NAME)
    resp = await client.put(with_query(location, digest=digest_of(b"")))
    assert resp.status == 201
    assert await blob_bytes(client, NAME, digest_of(b"")) == b""


async def test_concurrent_writes_to_one_session(env: RegistryEnv) -> None:
    """While one request streams into a session, another gets 416 and nothing mixes."""
    client = env.client
    location = await start_upload(client, NAME)
    upload_id = location.rsplit("/", 1)[1]
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield DATA.data[:1000]
        await release.wait()
        yield DATA.data[1000:2000]

    async def streaming() -> bool:
        upload = await env.registry.meta.get_upload(upload_id, NAME)
        return upload is not None and upload.lease_until > 0

    first = asyncio.create_task(client.patch(location, data=slow_body()))
    await wait_until_async(streaming, "the first PATCH to take the upload's lease")
    resp = await patch_chunk(client, location, b"intruder", 0)
    await assert_error(resp, 416, "BLOB_UPLOAD_INVALID")
    release.set()
    resp = await first
    assert resp.status == 202, await resp.text()
    assert resp.headers["Range"] == "0-1999"
    resp = await patch_chunk(client, location, DATA.data[2000:], 2000)
    assert resp.status == 202
    resp = await client.put(with_query(location, digest=DATA.digest))
    assert resp.status == 201
    assert await blob_bytes(client, NAME, DATA.digest) == DATA.data


async def test_filesystem_keeps_no_upload_leftovers(fs_env: RegistryEnv) -> None:
    """Completed, cancelled and failed uploads leave nothing under uploads/; blobs are
    stored once, content-addressed."""
    client = fs_env.client
    storage = fs_env.data / "storage"
    await push_blob_chunked(client, NAME, DATA, 7000)
    await push_blob(client, "team/second", DATA)
    location = await start_upload(client, NAME)
    await patch_chunk(client, location, b"cancelled", 0)
    assert (await client.delete(location)).status == 204
    location = await start_upload(client, NAME)
    resp = await client.put(with_query(location, digest=digest_of(b"x")), data=b"y")
    assert resp.status == 400
    leftovers = [p for p in (storage / "uploads").rglob("*") if p.is_file()]
    assert leftovers == []
    hex_digest = DATA.digest.split(":")[1]
    blob_files = [p for p in (storage / "blobs").rglob("*") if p.is_file()]
    assert blob_files == [storage / "blobs" / "sha256" / hex_digest[:2] / hex_digest]
    assert blob_files[0].read_bytes() == DATA.data
