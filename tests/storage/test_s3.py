"""S3-specific guarantees: the layout in the bucket, multipart segments, commits that copy no
bytes, what a crash leaves behind and how the sweep takes it, credentials, errors, presigned
download URLs."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from moorage.storage import s3 as s3_module
from moorage.storage import s3_garbage
from moorage.storage.base import ObjectNotFound, StorageError, SweepReport
from moorage.storage.s3 import S3Driver
from moorage.storage.s3_bucket import Bucket, Listed
from moorage.storage.s3_config import S3Config
from moorage.storage.s3_garbage import UNREFERENCED_SEGMENTS
from tests.storage.conftest import BUCKET, s3_config
from tests.storage.leftovers import leave_leftovers, unfinished_uploads
from tests.support.seaweedfs import SeaweedFS

MIB = 1 << 20


@pytest.fixture
def config(seaweedfs: SeaweedFS) -> S3Config:
    return s3_config(seaweedfs)


@pytest.fixture
async def driver(config: S3Config) -> AsyncIterator[S3Driver]:
    driver = S3Driver(config)
    yield driver
    await driver.close()


@pytest.fixture
def raw(seaweedfs: SeaweedFS) -> S3Store:
    """The bucket as a plain S3 client sees it."""
    return S3Store(
        BUCKET,
        endpoint=seaweedfs.endpoint,
        region=seaweedfs.region,
        access_key_id=seaweedfs.access_key,
        secret_access_key=seaweedfs.secret_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


async def stored(raw: S3Store, config: S3Config) -> list[str]:
    """Every object under the driver's prefix, relative to it."""
    found = await obstore.list(raw, config.prefix).collect_async()
    return sorted(meta["path"][len(config.prefix) + 1 :] for meta in found)


async def write(
    driver: S3Driver, key: str, data: bytes, offset: int = 0, chunk: int = 65536
) -> None:
    writer = await driver.open_writer(key, offset)
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.close()


async def descriptor_of(raw: S3Store, config: S3Config, key: str) -> dict[str, object]:
    result = await obstore.get_async(raw, f"{config.prefix}/{key}")
    assert result.attributes["moorage-kind"] == "composite"
    document: dict[str, object] = json.loads(bytes(await result.bytes_async()))
    assert result.attributes["moorage-size"] == str(document["size"])
    return document


async def test_layout_descriptor_and_segments(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    await write(driver, "uploads/u", b"hello ")
    await write(driver, "uploads/u", b"world", offset=6)
    document = await descriptor_of(raw, config, "uploads/u")
    segments = document["segments"]
    assert isinstance(segments, list)
    assert document["size"] == 11
    assert [(length, size) for _, length, size in segments] == [(6, 6), (5, 5)]
    objects = await stored(raw, config)
    assert objects == sorted(["uploads/u", *(f"_segments/{id_}" for id_, _, _ in segments)])
    first = await obstore.get_async(raw, f"{config.prefix}/_segments/{segments[0][0]}")
    assert bytes(await first.bytes_async()) == b"hello "

    # Commit writes a descriptor naming the same segments: no byte is copied.
    await driver.commit("uploads/u", "blobs/b")
    committed = await descriptor_of(raw, config, "blobs/b")
    assert committed["segments"] == segments
    assert "moved_to" not in committed
    assert await stored(raw, config) == sorted(
        ["blobs/b", *(f"_segments/{id_}" for id_, _, _ in segments)]
    )
    assert [k async for k in driver.list_keys("")] == ["blobs/b"]

    await driver.delete("blobs/b")
    assert await stored(raw, config) == []


async def test_resume_inside_a_segment_keeps_a_prefix_of_it(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    await write(driver, "uploads/u", b"0123456789")
    await write(driver, "uploads/u", b"abc", offset=4)
    document = await descriptor_of(raw, config, "uploads/u")
    segments = document["segments"]
    assert isinstance(segments, list)
    assert [(length, size) for _, length, size in segments] == [(4, 10), (3, 3)]
    assert await driver.get("uploads/u") == b"0123abc"
    # Cutting before the second segment deletes it.
    await write(driver, "uploads/u", b"Z", offset=2)
    assert await driver.get("uploads/u") == b"01Z"
    assert len([o for o in await stored(raw, config) if o.startswith("_segments/")]) == 2


async def test_multipart_segment_larger_than_a_part(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    data = os.urandom(12 * MIB + 12345)
    await write(driver, "uploads/big", data, chunk=100_000)
    document = await descriptor_of(raw, config, "uploads/big")
    segments = document["segments"]
    assert isinstance(segments, list) and len(segments) == 1
    head = await obstore.head_async(raw, f"{config.prefix}/_segments/{segments[0][0]}")
    assert head["size"] == len(data)
    assert (head["e_tag"] or "").strip('"').endswith("-3")  # three parts of 5 MiB at most
    await driver.commit("uploads/big", "blobs/big")
    assert await driver.get("blobs/big") == data
    tail = b"".join([c async for c in driver.read("blobs/big", 5 * MIB - 7, 6 * MIB)])
    assert tail == data[5 * MIB - 7 : 11 * MIB - 7]


async def test_reads_split_into_bounded_ranges(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "READ_RANGE", 1000)
    data = os.urandom(10_500)
    await write(driver, "uploads/r", data[:4321])
    await write(driver, "uploads/r", data[4321:], offset=4321)
    assert await driver.get("uploads/r") == data
    got = b"".join([c async for c in driver.read("uploads/r", 999, 5000)])
    assert got == data[999:5999]
    # Stopping a read part way cancels the request made ahead.
    reader = driver.read("uploads/r")
    assert await reader.__anext__() == data[:1000]
    await reader.aclose()


async def test_reads_through_obstore_as_over_https(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTPS the driver reads segments through obstore; the same reads, that way."""
    monkeypatch.setattr(s3_module, "READ_RANGE", 1000)
    monkeypatch.setattr(driver, "_ranges", None)
    data = os.urandom(10_500)
    await write(driver, "uploads/o", data[:4321])
    await write(driver, "uploads/o", data[4321:], offset=4321)
    assert await driver.get("uploads/o") == data
    assert b"".join([c async for c in driver.read("uploads/o", 999, 5000)]) == data[999:5999]
    reader = driver.read("uploads/o")
    assert await reader.__anext__() == data[:1000]
    await reader.aclose()


async def test_an_https_endpoint_behind_a_private_ca(seaweedfs: SeaweedFS) -> None:
    """Over TLS, with the store's CA given: every kind of read and write, through obstore."""
    assert seaweedfs.https_endpoint is not None and seaweedfs.ca_file is not None
    config = s3_config(
        seaweedfs, endpoint=seaweedfs.https_endpoint, ca_file=seaweedfs.ca_file, compact_limit=0
    )
    driver = S3Driver(config)
    try:
        data = os.urandom(2 * MIB + 12345)
        await write(driver, "uploads/tls", data[:MIB])
        await write(driver, "uploads/tls", data[MIB:], offset=MIB)
        assert await driver.get("uploads/tls") == data
        tail = b"".join([c async for c in driver.read("uploads/tls", MIB - 3, MIB)])
        assert tail == data[MIB - 3 : 2 * MIB - 3]
        await driver.commit("uploads/tls", "blobs/tls")
        assert await driver.stat("blobs/tls") == len(data)
        await driver.put("plain", b"small")
        assert await driver.get("plain") == b"small"
        assert await driver.delete("blobs/tls")
    finally:
        await driver.close()
    untrusted = S3Driver(replace(config, ca_file=None))
    with pytest.raises(StorageError, match="S3 request for plain failed"):
        await untrusted.get("plain")


def test_a_bad_ca_file_is_refused_when_the_driver_is_made(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    with pytest.raises(StorageError, match="cannot read the S3 CA file"):
        S3Driver(s3_config(seaweedfs, ca_file=tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(StorageError, match="holds no PEM certificate"):
        S3Driver(s3_config(seaweedfs, ca_file=tmp_path / "empty.pem"))


async def test_small_blobs_are_compacted_at_commit(seaweedfs: SeaweedFS, raw: S3Store) -> None:
    config = s3_config(seaweedfs, compact_limit=4 * MIB)
    driver = S3Driver(config)
    await write(driver, "uploads/u", b"abc")
    await write(driver, "uploads/u", b"def", offset=3)
    await driver.commit("uploads/u", "blobs/small")
    result = await obstore.get_async(raw, f"{config.prefix}/blobs/small")
    assert "moorage-kind" not in result.attributes
    assert bytes(await result.bytes_async()) == b"abcdef"
    assert await stored(raw, config) == ["blobs/small"]
    # The same blob committed again: the target stays, the source goes, with its segments.
    await write(driver, "uploads/v", b"abcdef")
    await driver.commit("uploads/v", "blobs/small")
    assert await stored(raw, config) == ["blobs/small"]
    # Empty blobs too.
    await write(driver, "uploads/e", b"")
    await driver.commit("uploads/e", "blobs/empty")
    assert await driver.get("blobs/empty") == b""
    assert await driver.stat("blobs/empty") == 0
    await driver.close()


async def test_commit_onto_existing_target_deletes_the_source_segments(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    await write(driver, "uploads/1", b"same bytes")
    await write(driver, "uploads/2", b"same bytes")
    await driver.commit("uploads/1", "blobs/x")
    await driver.commit("uploads/2", "blobs/x")
    document = await descriptor_of(raw, config, "blobs/x")
    segments = document["segments"]
    assert isinstance(segments, list)
    assert await stored(raw, config) == sorted(
        ["blobs/x", *(f"_segments/{id_}" for id_, _, _ in segments)]
    )


async def test_commit_of_a_put_object(driver: S3Driver) -> None:
    await driver.put("uploads/p", b"plain")
    await driver.commit("uploads/p", "blobs/p")
    assert await driver.get("blobs/p") == b"plain"
    assert await driver.stat("uploads/p") is None


async def interrupted_commit(driver: S3Driver, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Commit ``uploads/u`` (two segments) to ``blobs/t``, the connection lost when the
    source is to be deleted: both descriptors name the segments. The upload's bytes."""
    data = os.urandom(3000)
    await write(driver, "uploads/u", data[:1000])
    await write(driver, "uploads/u", data[1000:], offset=1000)
    original_delete = Bucket.delete

    async def failing_delete(self: Bucket, paths: list[str], key: str) -> None:
        if key == "uploads/u":
            raise StorageError("connection lost")
        await original_delete(self, paths, key)

    monkeypatch.setattr(Bucket, "delete", failing_delete)
    with pytest.raises(StorageError):
        await driver.commit("uploads/u", "blobs/t")
    monkeypatch.setattr(Bucket, "delete", original_delete)
    return data


async def test_interrupted_commit_never_loses_the_target(
    driver: S3Driver, raw: S3Store, config: S3Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the target exists and before the source is deleted leaves two
    descriptors naming one set of segments; deleting or rewriting the source spares them."""
    data = await interrupted_commit(driver, monkeypatch)
    assert (await descriptor_of(raw, config, "uploads/u"))["moved_to"] == ["blobs/t"]
    assert await driver.get("blobs/t") == data

    # Rewriting the source (cutting into its segments) and deleting it spare the target's.
    await write(driver, "uploads/u", b"new", offset=500)
    assert await driver.get("uploads/u") == data[:500] + b"new"
    assert await driver.delete("uploads/u") is True
    assert await driver.get("blobs/t") == data
    target_segments = (await descriptor_of(raw, config, "blobs/t"))["segments"]
    assert isinstance(target_segments, list)
    assert await stored(raw, config) == sorted(
        ["blobs/t", *(f"_segments/{id_}" for id_, _, _ in target_segments)]
    )


async def test_repeated_commit_completes_an_interrupted_one(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write(driver, "uploads/u", b"payload")
    original_delete = Bucket.delete

    async def failing_delete(self: Bucket, paths: list[str], key: str) -> None:
        raise StorageError("connection lost")

    monkeypatch.setattr(Bucket, "delete", failing_delete)
    with pytest.raises(StorageError):
        await driver.commit("uploads/u", "blobs/t")
    monkeypatch.setattr(Bucket, "delete", original_delete)
    await driver.commit("uploads/u", "blobs/t")
    assert await driver.stat("uploads/u") is None
    assert await driver.get("blobs/t") == b"payload"


async def test_failed_descriptor_write_keeps_the_old_object(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write(driver, "uploads/u", b"kept")
    original_put = Bucket.put

    async def failing_put(self: Bucket, path: str, key: str, data: bytes, **kwargs: str) -> None:
        if path.endswith("uploads/u"):
            raise StorageError("connection lost")
        await original_put(self, path, key, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Bucket, "put", failing_put)
    with pytest.raises(StorageError):
        await write(driver, "uploads/u", b" and lost", offset=4)
    monkeypatch.setattr(Bucket, "put", original_put)
    assert await driver.get("uploads/u") == b"kept"
    await write(driver, "uploads/u", b"!", offset=4)
    assert await driver.get("uploads/u") == b"kept!"


async def test_a_killed_writer_leaves_nothing_visible(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    """A process killed while parts of its segment are uploaded: the key is unchanged."""
    await write(driver, "uploads/u", b"before")
    script = textwrap.dedent(
        f"""
        import asyncio, json, os
        from moorage.storage.s3 import S3Driver
        from moorage.storage.s3_config import S3Config

        async def main():
            driver = S3Driver(S3Config(**json.loads({json.dumps(config.__dict__)!r})))
            writer = await driver.open_writer("uploads/u", 6)
            for _ in range(12):
                await writer.write(os.urandom(1 << 20))
            os._exit(3)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr.decode()
    assert await driver.stat("uploads/u") == 6
    assert await driver.get("uploads/u") == b"before"
    assert [k async for k in driver.list_keys("")] == ["uploads/u"]
    # The parts it had sent belong to a multipart upload never completed: no object shows.
    assert len(await stored(raw, config)) == 2  # the descriptor and its one segment
    await write(driver, "uploads/u", b" after", offset=6)
    assert await driver.get("uploads/u") == b"before after"


async def test_a_writer_that_lost_its_place_fails(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    """Two writers at one offset (a lease taken over): the second to close fails cleanly."""
    await write(driver, "uploads/u", b"base")
    first = await driver.open_writer("uploads/u", 4)
    second = await driver.open_writer("uploads/u", 4)
    await first.write(b"-first")
    await second.write(b"-second")
    await first.close()
    with pytest.raises(StorageError, match="changed by another writer"):
        await second.close()
    assert await driver.get("uploads/u") == b"base-first"
    segments = [o for o in await stored(raw, config) if o.startswith("_segments/")]
    assert len(segments) == 2


async def test_damaged_objects_are_storage_errors(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    composite = {"moorage-kind": "composite", "moorage-size": "5"}
    await obstore.put_async(raw, f"{config.prefix}/bad", b"{not json", attributes=composite)
    with pytest.raises(StorageError, match="corrupt descriptor"):
        await driver.get("bad")
    short = json.dumps({"moorage": 1, "size": 5, "segments": [["s", 5, 5]]}).encode()
    await obstore.put_async(raw, f"{config.prefix}/short", short, attributes=composite)
    await obstore.put_async(raw, f"{config.prefix}/_segments/s", b"abc")
    cut_short = "_segments/s bytes 0-4: the store sent range 'bytes 0-2/3'"
    with pytest.raises(StorageError, match=cut_short):
        await driver.get("short")
    await obstore.delete_async(raw, f"{config.prefix}/_segments/s")
    with pytest.raises(ObjectNotFound):
        await driver.get("short")


async def test_keys_of_the_segment_namespace_are_refused(driver: S3Driver) -> None:
    for key in ("_segments/abc", "", "a//b", "a/../b", "./a"):
        with pytest.raises(StorageError):
            await driver.put(key, b"x")


async def test_prefixes_keep_registries_apart(seaweedfs: SeaweedFS) -> None:
    one, two = S3Driver(s3_config(seaweedfs)), S3Driver(s3_config(seaweedfs))
    await one.put("blobs/a", b"1")
    await write(two, "uploads/b", b"2")
    assert [k async for k in one.list_keys("")] == ["blobs/a"]
    assert [k async for k in two.list_keys("")] == ["uploads/b"]
    assert await two.stat("blobs/a") is None
    unprefixed = S3Driver(s3_config(seaweedfs, prefix=""))
    assert await unprefixed.stat("blobs/a") is None


async def test_wrong_credentials_are_a_storage_error(config: S3Config) -> None:
    driver = S3Driver(replace(config, secret_key="not-the-secret"))
    for attempt in (driver.stat("k"), driver.put("k", b"x"), driver.get("k")):
        with pytest.raises(StorageError) as raised:
            await attempt
        assert not isinstance(raised.value, ObjectNotFound)
        assert "403" in str(raised.value) or "denied" in str(raised.value).lower()


async def test_unreachable_store_is_a_storage_error(config: S3Config) -> None:
    driver = S3Driver(replace(config, endpoint="http://127.0.0.1:9"))
    with pytest.raises(StorageError):
        await driver.stat("k")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
        return response.status, response.read()


async def test_download_urls(seaweedfs: SeaweedFS) -> None:
    config = s3_config(seaweedfs)
    assert await S3Driver(config).download_url("k", 60) is None  # not configured
    driver = S3Driver(replace(config, download_urls=True))
    data = os.urandom(100_000)
    await driver.put("plain", data)
    await write(driver, "uploads/one", data)
    await driver.commit("uploads/one", "blobs/one")
    await write(driver, "uploads/two", data[:10])
    await write(driver, "uploads/two", data[10:], offset=10)
    await driver.commit("uploads/two", "blobs/two")
    await write(driver, "uploads/cut", data)
    await write(driver, "uploads/cut", b"", offset=50)  # a prefix of its one segment

    for key in ("plain", "blobs/one"):
        url = await driver.download_url(key, 60)
        assert url is not None and "X-Amz-Signature=" in url
        assert http_get(url) == (200, data)
        assert http_get(url, {"Range": "bytes=1000-1999"}) == (206, data[1000:2000])
    assert await driver.download_url("blobs/two", 60) is None
    assert await driver.download_url("uploads/cut", 60) is None
    assert await driver.download_url("missing", 60) is None


async def test_download_urls_name_the_public_endpoint(seaweedfs: SeaweedFS) -> None:
    config = s3_config(seaweedfs, download_urls=True, public_endpoint="https://s3.example.com")
    driver = S3Driver(config)
    await driver.put("plain", b"x")
    url = await driver.download_url("plain", 60)
    assert url is not None
    assert url.startswith(f"https://s3.example.com/{BUCKET}/{config.prefix}/plain?")


def test_construction_is_cheap_and_validated(seaweedfs: SeaweedFS) -> None:
    """Built in every worker process: no request, no client until the first operation."""
    driver = S3Driver(s3_config(seaweedfs, endpoint="http://127.0.0.1:9"))
    assert driver._bucket._store is None
    with pytest.raises(ValueError):
        s3_config(seaweedfs, part_size=1 << 20)


# -- what garbage collection needs: logical sizes, and the sweep of leftovers ----------------

HOUR = 3600.0


def segments_named(document: dict[str, object]) -> list[str]:
    segments = document["segments"]
    assert isinstance(segments, list)
    return [f"_segments/{id_}" for id_, _, _ in segments]


async def test_list_objects_gives_logical_sizes_with_a_head_per_possible_descriptor(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = S3Driver(s3_config(seaweedfs, compact_limit=4096))
    await driver.put("tiny", b"ab")  # under 36 bytes: a plain object, LIST says it all
    await driver.put("plain", b"p" * 100)
    await write(driver, "uploads/small", b"s" * 3000)
    await driver.commit("uploads/small", "blobs/compacted")  # a plain object now
    await write(driver, "uploads/large", b"l" * 5000)
    await write(driver, "uploads/large", b"L" * 5000, offset=5000)
    await driver.commit("uploads/large", "blobs/large")  # a descriptor of two segments
    await write(driver, "uploads/open", b"o" * 7)
    heads: list[str] = []
    head = Bucket.head

    async def counted(self: Bucket, path: str, key: str) -> object:
        heads.append(key)
        return await head(self, path, key)

    monkeypatch.setattr(Bucket, "head", counted)
    found = {o.key: o.size async for o in driver.list_objects("")}
    assert found == {
        "tiny": 2,
        "plain": 100,
        "blobs/compacted": 3000,
        "blobs/large": 10_000,
        "uploads/open": 7,
    }
    assert sorted(heads) == ["blobs/compacted", "blobs/large", "plain", "uploads/open"]
    heads.clear()
    assert sorted([k async for k in driver.list_keys("")]) == sorted(found)
    assert heads == []  # list_keys is LIST alone
    await driver.close()


async def test_an_orphaned_segment_of_a_failed_writer_is_swept_once_old(
    driver: S3Driver, raw: S3Store, config: S3Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stored its segment and failed to write the descriptor naming it: whether
    that PUT took effect is unknown, so the writer leaves the segment; the sweep takes it."""
    await write(driver, "uploads/u", b"kept")
    original_put = Bucket.put

    async def failing_put(self: Bucket, path: str, key: str, data: bytes, **kwargs: str) -> None:
        if path.endswith("uploads/u"):
            raise StorageError("connection lost")
        await original_put(self, path, key, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Bucket, "put", failing_put)
    with pytest.raises(StorageError):
        await write(driver, "uploads/u", b" and lost", offset=4)
    monkeypatch.setattr(Bucket, "put", original_put)
    live = segments_named(await descriptor_of(raw, config, "uploads/u"))
    (orphan,) = set(await stored(raw, config)) - {"uploads/u", *live}

    assert await driver.sweep(time.time() - HOUR) == SweepReport()  # young: kept
    taken = SweepReport.of((*UNREFERENCED_SEGMENTS, 1, len(b" and lost")))
    assert taken.lines == ("1 unreferenced segment, 9 B",)
    assert await driver.sweep(time.time() + HOUR, dry_run=True) == taken
    assert orphan in await stored(raw, config)
    assert await driver.sweep(time.time() + HOUR) == taken
    assert await stored(raw, config) == sorted(["uploads/u", *live])
    assert await driver.get("uploads/u") == b"kept"


async def test_a_killed_writer_s_multipart_upload_is_aborted_once_old(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    """A process killed while it sends the parts of a segment never completes nor aborts
    its multipart upload; the sweep aborts it, and the key stays as it was."""
    await write(driver, "uploads/u", b"before")
    script = textwrap.dedent(
        f"""
        import asyncio, json, os
        from moorage.storage.s3 import S3Driver
        from moorage.storage.s3_config import S3Config

        async def main():
            driver = S3Driver(S3Config(**json.loads({json.dumps(config.__dict__)!r})))
            writer = await driver.open_writer("uploads/u", 6)
            for _ in range(12):
                await writer.write(os.urandom(1 << 20))
            await asyncio.sleep(0.5)  # let the first parts arrive
            os._exit(3)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr.decode()
    (unfinished,) = await unfinished_uploads(config)
    assert unfinished.startswith(f"{config.prefix}/_segments/")

    assert await driver.sweep(time.time() - HOUR) == SweepReport()
    assert await unfinished_uploads(config) == [unfinished]
    dry = await driver.sweep(time.time() + HOUR, dry_run=True)
    assert dry.items == 1 and dry.bytes % (5 * MIB) == 0
    assert dry.lines[0].startswith("1 unfinished multipart upload, ")
    assert await unfinished_uploads(config) == [unfinished]
    assert await driver.sweep(time.time() + HOUR) == dry
    assert await unfinished_uploads(config) == []
    assert await driver.get("uploads/u") == b"before"
    assert await driver.sweep(time.time() + HOUR) == SweepReport()


async def test_sweeps_keep_to_their_prefix(seaweedfs: SeaweedFS) -> None:
    """Registries sharing a bucket each sweep their own leftovers, never another's."""
    one, two = S3Driver(s3_config(seaweedfs)), S3Driver(s3_config(seaweedfs))
    await write(two, "uploads/u", b"two's")
    theirs = await leave_leftovers(two)
    assert await one.sweep(time.time() + HOUR) == SweepReport()
    assert await two.sweep(time.time() + HOUR) == theirs
    assert await two.get("uploads/u") == b"two's"
    await one.close()
    await two.close()


async def test_an_interrupted_commit_keeps_its_segments_through_sweeps(
    driver: S3Driver, raw: S3Store, config: S3Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two descriptors name one set of segments (the source says it moves to the target);
    when the source is cut and rewritten, the segments the target names stay, even if the
    target is not listed: the source names it."""
    data = await interrupted_commit(driver, monkeypatch)
    assert await driver.sweep(time.time() + HOUR) == SweepReport()

    await write(driver, "uploads/u", b"new", offset=0)  # names none of the target's segments
    source = await descriptor_of(raw, config, "uploads/u")
    assert source["moved_to"] == ["blobs/t"]
    target_segments = segments_named(await descriptor_of(raw, config, "blobs/t"))
    assert not set(target_segments) & set(segments_named(source))
    pages = Bucket.pages

    async def without_blobs(self: Bucket, directory: str, key: str) -> AsyncIterator[list[Listed]]:
        if not directory.endswith("/blobs"):
            async for page in pages(self, directory, key):
                yield page

    monkeypatch.setattr(Bucket, "pages", without_blobs)
    assert await driver.sweep(time.time() + HOUR) == SweepReport()
    monkeypatch.setattr(Bucket, "pages", pages)
    assert await driver.get("blobs/t") == data
    assert await driver.get("uploads/u") == b"new"


async def test_a_commit_between_two_listings_of_one_pass_loses_no_segment(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass lists the blobs before the target exists and the uploads after the
    source is gone, so it finds the upload's segments named nowhere; the second finds them
    in the blob, and they stay."""
    data = os.urandom(3000)
    await write(driver, "uploads/u", data[:1000])
    await write(driver, "uploads/u", data[1000:], offset=1000)
    pages = Bucket.pages
    committed: list[bool] = []

    async def commit_first(self: Bucket, directory: str, key: str) -> AsyncIterator[list[Listed]]:
        if directory.endswith("/uploads") and not committed:
            committed.append(True)
            await driver.commit("uploads/u", "blobs/b")
        async for page in pages(self, directory, key):
            yield page

    passes: list[set[str]] = []
    named = s3_garbage._Passes.named

    async def recorded(self: s3_garbage._Passes) -> set[str]:
        passes.append(await named(self))
        return passes[-1]

    monkeypatch.setattr(Bucket, "pages", commit_first)
    monkeypatch.setattr(s3_garbage._Passes, "named", recorded)
    assert await driver.sweep(time.time() + HOUR) == SweepReport()
    assert committed and len(passes) == 2
    assert passes[0] == set()  # the first pass missed them
    assert len(passes[1]) == 2
    assert await driver.get("blobs/b") == data


async def test_segments_keep_moving_until_the_last_pass_then_none_is_deleted(
    driver: S3Driver, raw: S3Store, config: S3Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pass finds more candidates named than the one before: after the last pass, the
    sweep deletes nothing (the next sweep looks again)."""
    await write(driver, "uploads/u", b"abc")
    orphans = [secrets.token_hex(16) for _ in range(s3_garbage.MAX_PASSES + 1)]
    for segment_id in orphans:
        await driver._bucket.put(f"{config.prefix}/_segments/{segment_id}", "", b"x")
    calls: list[int] = []

    async def one_more_each_time(self: s3_garbage._Passes) -> set[str]:
        calls.append(1)
        return set(orphans[: len(calls) - 1])

    monkeypatch.setattr(s3_garbage._Passes, "named", one_more_each_time)
    assert await driver.sweep(time.time() + HOUR) == SweepReport()
    assert len(calls) == s3_garbage.MAX_PASSES
    assert (
        len([o for o in await stored(raw, config) if o.startswith("_segments/")])
        == len(orphans) + 1
    )


async def test_large_descriptors_are_read_after_a_head(
    driver: S3Driver, raw: S3Store, config: S3Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Descriptors larger than ``READ_WHOLE`` (many segments) are read too."""
    monkeypatch.setattr(s3_garbage, "READ_WHOLE", 100)
    data = b"".join([os.urandom(10) for _ in range(5)])
    for n in range(5):
        await write(driver, "uploads/many", data[n * 10 : n * 10 + 10], offset=n * 10)
    await driver.put("plain", os.urandom(500))
    await driver._bucket.put(f"{config.prefix}/_segments/{secrets.token_hex(16)}", "", b"orphan")
    assert await driver.sweep(time.time() + HOUR) == SweepReport.of((*UNREFERENCED_SEGMENTS, 1, 6))
    assert await driver.get("uploads/many") == data
    assert len([o for o in await stored(raw, config) if o.startswith("_segments/")]) == 5


async def test_a_corrupt_descriptor_stops_the_sweep(
    driver: S3Driver, raw: S3Store, config: S3Config
) -> None:
    """Which segments a descriptor that cannot be read names is unknown: nothing is deleted."""
    await write(driver, "uploads/u", b"abc")
    await driver._bucket.put(f"{config.prefix}/_segments/{secrets.token_hex(16)}", "", b"orphan")
    composite = {"moorage-kind": "composite", "moorage-size": "5"}
    await obstore.put_async(raw, f"{config.prefix}/bad", b"{not json" * 5, attributes=composite)
    before = await stored(raw, config)
    with pytest.raises(StorageError, match="corrupt descriptor at bad"):
        await driver.sweep(time.time() + HOUR)
    assert await stored(raw, config) == before
