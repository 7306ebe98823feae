"""Unfinished multipart uploads over presigned HTTP requests: the signature against AWS's
example and SeaweedFS, and the answers a store gives (pages, gone uploads, refusals) against
a scripted server. The sweep's use of them runs on SeaweedFS in test_s3.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from moorage.storage import s3_garbage
from moorage.storage.base import StorageError
from moorage.storage.s3_bucket import Bucket, Connection
from moorage.storage.s3_multipart import Multipart, NotSupported, Unfinished
from moorage.storage.s3_sigv4 import presign
from tests.support.seaweedfs import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, SeaweedFS

# --- the signature ---------------------------------------------------------------------------


def test_presign_gives_the_signature_of_aws_s_example() -> None:
    """The example of "Authenticating Requests: Using Query Parameters (AWS Signature
    Version 4)" in the S3 API reference."""
    url, host = presign(
        method="GET",
        endpoint="https://s3.amazonaws.com",
        bucket="examplebucket",
        path_style=False,
        region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        path="test.txt",
        query={},
        expires=86400,
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert host == "examplebucket.s3.amazonaws.com"
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def signed(endpoint: str, path: str = "") -> tuple[str, str]:
    return presign(
        method="GET",
        endpoint=endpoint,
        bucket="b",
        path_style=True,
        region="r",
        access_key="a",
        secret_key="s",
        path=path,
        query={"uploads": "", "prefix": "p/_segments/", "key-marker": "k~1"},
        expires=60,
        now=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_presign_path_style_with_query_parameters() -> None:
    url, host = signed("http://127.0.0.1:8333")
    assert host == "127.0.0.1:8333"
    assert url.startswith(
        "http://127.0.0.1:8333/b?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2F20240102"
    )
    query = url.split("?", 1)[1]
    assert "&key-marker=k~1&prefix=p%2F_segments%2F&uploads=&X-Amz-Signature=" in query
    # Default ports are left out of the host, as clients send it; a path in the endpoint stays.
    url, host = signed("https://s3.example.com:443/base/")
    assert host == "s3.example.com"
    assert url.startswith("https://s3.example.com/base/b?")
    url, _ = signed("http://h", "dir/a key")
    assert url.startswith("http://h/b/dir/a%20key?")


def connection(endpoint: str, secret: str = SECRET_KEY) -> Connection:
    return Connection(
        endpoint=endpoint,
        region=REGION,
        bucket=BUCKET,
        access_key=ACCESS_KEY,
        secret_key=secret,
        path_style=True,
        timeout=60,
        sign_payload=True,
    )


async def test_seaweedfs_checks_the_signature(seaweedfs: SeaweedFS) -> None:
    await Bucket(connection(seaweedfs.endpoint)).put("multipart/object", "", b"x")
    async with Multipart(connection(seaweedfs.endpoint)) as multipart:
        assert await multipart.unfinished("nothing-here/") == []
    async with Multipart(connection(seaweedfs.endpoint, "not-the-secret")) as multipart:
        with pytest.raises(StorageError, match="answered 403"):
            await multipart.unfinished("nothing-here/")


async def test_a_missing_bucket_is_a_storage_error(seaweedfs: SeaweedFS) -> None:
    missing = replace(connection(seaweedfs.endpoint), bucket="no-such-bucket")
    async with Multipart(missing) as multipart:
        with pytest.raises(StorageError, match="answered 404: NoSuchBucket"):
            await multipart.unfinished("p/")


async def test_unreachable_store_is_a_storage_error() -> None:
    async with Multipart(connection("http://127.0.0.1:9")) as multipart:
        with pytest.raises(StorageError, match="listing the multipart uploads"):
            await multipart.unfinished("p/")


# --- against a scripted store ------------------------------------------------------------------

NAMESPACE = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def uploads_page(uploads: list[tuple[str, str]], following: tuple[str, str] | None) -> str:
    entries = "".join(
        f"<Upload><Key>{key}</Key><UploadId>{upload_id}</UploadId>"
        "<Initiated>2024-01-02T03:04:05.000Z</Initiated></Upload>"
        for key, upload_id in uploads
    )
    more = (
        "<IsTruncated>true</IsTruncated>"
        f"<NextKeyMarker>{following[0]}</NextKeyMarker>"
        f"<NextUploadIdMarker>{following[1]}</NextUploadIdMarker>"
        if following
        else "<IsTruncated>false</IsTruncated>"
    )
    return f"<ListMultipartUploadsResult {NAMESPACE}>{more}{entries}</ListMultipartUploadsResult>"


def parts_page(sizes: list[int], following: int | None) -> str:
    entries = "".join(f"<Part><PartNumber>1</PartNumber><Size>{s}</Size></Part>" for s in sizes)
    more = (
        f"<IsTruncated>true</IsTruncated><NextPartNumberMarker>{following}</NextPartNumberMarker>"
        if following
        else "<IsTruncated>false</IsTruncated>"
    )
    return f"<ListPartsResult {NAMESPACE}>{more}{entries}</ListPartsResult>"


@dataclass
class Store:
    """Answers by (method, path, the marker asked for); records what it was asked."""

    answers: dict[tuple[str, str, str], tuple[int, str]] = field(default_factory=dict)
    asked: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        assert "X-Amz-Signature" in query and request.headers["Host"] == request.host
        self.asked.append((request.method, request.path, query))
        marker = query.get("key-marker") or query.get("part-number-marker") or ""
        status, body = self.answers.get((request.method, request.path, marker), (404, ""))
        return web.Response(status=status, text=body, content_type="application/xml")


@pytest.fixture
async def store() -> AsyncIterator[tuple[Store, str]]:
    scripted = Store()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield scripted, f"http://127.0.0.1:{server.port}"
    await server.close()


async def test_listings_follow_their_pages(store: tuple[Store, str]) -> None:
    scripted, endpoint = store
    bucket = f"/{BUCKET}"
    scripted.answers = {
        ("GET", bucket, ""): (200, uploads_page([("p/_segments/a", "1")], ("p/_segments/a", "1"))),
        ("GET", bucket, "p/_segments/a"): (200, uploads_page([("p/_segments/b", "2")], None)),
        ("GET", f"{bucket}/p/_segments/a", ""): (200, parts_page([5, 6], 2)),
        ("GET", f"{bucket}/p/_segments/a", "2"): (200, parts_page([7], None)),
        ("DELETE", f"{bucket}/p/_segments/a", ""): (204, ""),
    }
    initiated = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    async with Multipart(connection(endpoint)) as multipart:
        found = await multipart.unfinished("p/_segments/")
        assert found == [
            Unfinished("p/_segments/a", "1", initiated),
            Unfinished("p/_segments/b", "2", initiated),
        ]
        assert await multipart.size(found[0]) == 18
        assert await multipart.size(found[1]) is None  # gone: 404
        assert await multipart.abort(found[0]) is True
        assert await multipart.abort(found[1]) is False
    assert scripted.asked[0][2]["prefix"] == "p/_segments/"
    assert scripted.asked[1][2]["upload-id-marker"] == "1"
    assert scripted.asked[-2][2]["uploadId"] == "1"


async def test_refusals_and_nonsense_are_storage_errors(store: tuple[Store, str]) -> None:
    scripted, endpoint = store
    denied = "<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    looping = uploads_page([("p/x", "1")], ("p/x", "1"))
    async with Multipart(connection(endpoint)) as multipart:
        scripted.answers = {("GET", f"/{BUCKET}", ""): (403, denied)}
        with pytest.raises(StorageError, match="answered 403: AccessDenied"):
            await multipart.unfinished("p/")
        scripted.answers = {("GET", f"/{BUCKET}", ""): (200, "not xml")}
        with pytest.raises(StorageError, match="not XML"):
            await multipart.unfinished("p/")
        scripted.answers = {
            ("GET", f"/{BUCKET}", ""): (200, looping),
            ("GET", f"/{BUCKET}", "p/x"): (200, looping),
        }
        with pytest.raises(StorageError, match="repeats the same page"):
            await multipart.unfinished("p/")
        scripted.answers = {("GET", f"/{BUCKET}", ""): (501, "")}
        with pytest.raises(NotSupported):
            await multipart.unfinished("p/")


async def test_a_store_without_multipart_listing_still_sweeps_segments(
    store: tuple[Store, str], caplog: pytest.LogCaptureFixture
) -> None:
    scripted, endpoint = store
    not_implemented = "<Error><Code>NotImplemented</Code></Error>"
    scripted.answers = {("GET", f"/{BUCKET}", ""): (501, not_implemented)}
    with caplog.at_level(logging.WARNING, "moorage.storage.s3"):
        found = await s3_garbage._unfinished_uploads(
            Bucket(connection(endpoint)), "p/_segments/", 2e9, dry_run=False
        )
    assert found == (0, 0)
    assert "unfinished multipart uploads cannot be swept" in caplog.text
