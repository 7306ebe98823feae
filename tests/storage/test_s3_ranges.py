"""Ranged GETs read off the socket: against SeaweedFS for signing and data, against a scripted
HTTP server for every way a store can answer wrong."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import obstore
import pytest
from obstore.store import S3Store

from moorage.storage.base import StorageError
from moorage.storage.s3_bucket import Bucket, Connection
from moorage.storage.s3_ranges import RECEIVE, RangeNotFound, RangeReader, RangeResponse
from tests.support.seaweedfs import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, SeaweedFS


async def body(response: RangeResponse) -> bytes:
    return b"".join([chunk async for chunk in response.chunks()])


# --- against SeaweedFS ----------------------------------------------------------------------


def bucket(seaweedfs: SeaweedFS, secret: str = SECRET_KEY) -> Bucket:
    return Bucket(
        Connection(
            endpoint=seaweedfs.endpoint,
            region=REGION,
            bucket=BUCKET,
            access_key=ACCESS_KEY,
            secret_key=secret,
            path_style=True,
            timeout=60,
            sign_payload=True,
        )
    )


def reader_for(target: Bucket, timeout: float = 60) -> RangeReader:
    return RangeReader(lambda path: target.sign_get(path, path, 300, None), timeout)


async def test_reads_exactly_the_range(seaweedfs: SeaweedFS) -> None:
    target = bucket(seaweedfs)
    data = os.urandom(3 * RECEIVE + 12345)
    await obstore.put_async(target.store, "ranges/object", data)
    reader = reader_for(target)
    for start, end in [(0, len(data)), (1, 2), (RECEIVE - 3, 2 * RECEIVE + 5), (7, len(data))]:
        response = await reader.open("ranges/object", start, end)
        assert await body(response) == data[start:end]


async def test_a_missing_object_is_not_found(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(RangeNotFound):
        await reader_for(bucket(seaweedfs)).open("ranges/missing", 0, 10)


async def test_a_bad_signature_is_refused_with_the_stores_code(
    seaweedfs: SeaweedFS, raw: S3Store
) -> None:
    await obstore.put_async(raw, "ranges/signed", b"0123456789")
    reader = reader_for(bucket(seaweedfs, secret="not-the-secret"))
    with pytest.raises(StorageError, match=r"answered 403: SignatureDoesNotMatch") as raised:
        await reader.open("ranges/signed", 0, 10)
    assert not isinstance(raised.value, RangeNotFound)


async def test_a_range_past_the_end_is_an_error(seaweedfs: SeaweedFS, raw: S3Store) -> None:
    await obstore.put_async(raw, "ranges/short", b"abc")
    with pytest.raises(StorageError, match="bytes 0-4: the store sent range 'bytes 0-2/3'"):
        await reader_for(bucket(seaweedfs)).open("ranges/short", 0, 5)


@pytest.fixture
def raw(seaweedfs: SeaweedFS) -> S3Store:
    return bucket(seaweedfs).store


# --- against a scripted server --------------------------------------------------------------


@dataclass
class Store:
    """An HTTP server that answers each connection with the next scripted reply."""

    replies: list[Callable[[asyncio.StreamWriter], Awaitable[None]]]
    requests: list[bytes] = field(default_factory=list)
    #: Keep each connection open after the reply until the client closes it (and say so).
    linger: bool = False
    closed_early: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests.append(await reader.readuntil(b"\r\n\r\n"))
        reply = self.replies.pop(0)
        try:
            await reply(writer)
            await writer.drain()
            if self.linger and not await reader.read(1):
                self.closed_early.set()
        except ConnectionError:
            self.closed_early.set()
        finally:
            writer.close()

    def reader(self, timeout: float = 5) -> RangeReader:
        return RangeReader(lambda path: f"http://127.0.0.1:{self.port}/b/{path}?X-Sig=1", timeout)


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    scripted = Store([])
    server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
    scripted.port = server.sockets[0].getsockname()[1]
    async with server:
        yield scripted


def reply(
    head: str, data: bytes = b"", *, pieces: int = 1, stall: float = 0
) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    """Send ``head`` (CRLF line ends added) and ``data`` in ``pieces`` writes 10 ms apart, so
    that the reader gets them in separate reads as from a network; then stall ``stall``
    seconds, a store that stops answering (what the reader's timeout is for). Sleeps that
    play the store's part: nothing is waited for."""
    message = head.replace("\n", "\r\n").encode() + b"\r\n" + data

    async def send(writer: asyncio.StreamWriter) -> None:
        size = -(-len(message) // pieces)
        for at in range(0, len(message), size):
            writer.write(message[at : at + size])
            await writer.drain()
            await asyncio.sleep(0.01)
        await asyncio.sleep(stall)

    return send


def partial(data: bytes, start: int, end: int, total: int) -> str:
    return (
        f"HTTP/1.1 206 Partial Content\nContent-Length: {len(data)}\n"
        f"Content-Range: bytes {start}-{end - 1}/{total}\n"
    )


async def test_sends_a_signed_ranged_request(store: Store) -> None:
    store.replies.append(reply(partial(b"cde", 2, 5, 9), b"cde"))
    response = await store.reader().open("seg/1", 2, 5)
    assert await body(response) == b"cde"
    request = store.requests[0].decode()
    assert request.startswith("GET /b/seg/1?X-Sig=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{store.port}\r\n" in request
    assert "Range: bytes=2-4\r\n" in request


async def test_a_head_and_body_split_across_packets(store: Store) -> None:
    data = os.urandom(50_000)
    store.replies.append(reply(partial(data, 0, 50_000, 50_000), data, pieces=37))
    assert await body(await store.reader().open("seg", 0, 50_000)) == data


async def test_a_whole_object_answer_to_a_range_from_zero(store: Store) -> None:
    store.replies.append(reply("HTTP/1.1 200 OK\nContent-Length: 4\n", b"abcd"))
    assert await body(await store.reader().open("seg", 0, 4)) == b"abcd"


async def test_transient_failures_are_retried(store: Store) -> None:
    store.replies += [
        reply("HTTP/1.1 503 Slow Down\nContent-Length: 0\n"),
        reply("HTTP/1.1 500 Internal Error\nContent-Length: 0\n"),
        reply(partial(b"xy", 0, 2, 2), b"xy"),
    ]
    assert await body(await store.reader().open("seg", 0, 2)) == b"xy"
    assert len(store.requests) == 3


async def test_a_connection_dropped_before_the_answer_is_retried(store: Store) -> None:
    store.replies += [reply(""), reply(partial(b"xy", 0, 2, 2), b"xy")]
    assert await body(await store.reader().open("seg", 0, 2)) == b"xy"
    assert len(store.requests) == 2


async def test_persistent_failures_give_up_with_the_code(store: Store) -> None:
    error = b"<Error><Code>InternalError</Code><Message>no</Message></Error>"
    head = f"HTTP/1.1 500 Internal Error\nContent-Length: {len(error)}\n"
    store.replies += [reply(head, error)] * 3
    with pytest.raises(StorageError, match="answered 500: InternalError"):
        await store.reader().open("seg", 0, 2)
    assert len(store.requests) == 3


async def test_client_errors_are_not_retried(store: Store) -> None:
    error = b"<Error><Code>AccessDenied</Code></Error>"
    store.replies.append(reply(f"HTTP/1.1 403 Forbidden\nContent-Length: {len(error)}\n", error))
    with pytest.raises(StorageError, match="answered 403: AccessDenied"):
        await store.reader().open("seg", 0, 2)
    assert len(store.requests) == 1


async def test_not_found(store: Store) -> None:
    store.replies.append(reply("HTTP/1.1 404 Not Found\nContent-Length: 0\n"))
    with pytest.raises(RangeNotFound):
        await store.reader().open("seg", 0, 2)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("HTTP/1.1 200 OK\nContent-Length: 9\n", "ignored the Range header"),
        ("HTTP/1.1 206 Partial\nContent-Length: 3\nContent-Range: bytes 0-2/9\n", "sent range"),
        ("HTTP/1.1 206 Partial\nContent-Range: bytes 4-6/9\n", "no Content-Length"),
        (
            "HTTP/1.1 206 Partial\nContent-Length: 2\nContent-Range: bytes 4-6/9\n",
            "sent 2 bytes, not 3",
        ),
        ("HTTP/1.1 206 Partial\nTransfer-Encoding: chunked\n", "chunked body"),
        ("SSH-2.0-OpenSSH\n", "not HTTP/1.x"),
    ],
)
async def test_answers_that_are_not_the_range_are_errors(
    store: Store, head: str, message: str
) -> None:
    store.replies.append(reply(head, b"xyz"))
    with pytest.raises(StorageError, match=message):
        await store.reader().open("seg", 4, 7)


async def test_a_body_cut_short_is_an_error(store: Store) -> None:
    store.replies.append(reply(partial(b"0123456789", 0, 10, 10), b"01234"))
    response = await store.reader().open("seg", 0, 10)
    with pytest.raises(StorageError, match="closed the connection 5 bytes before the end"):
        await body(response)


async def test_a_stalled_store_times_out(store: Store) -> None:
    store.replies.append(reply(partial(b"0123456789", 0, 10, 10), b"0123", stall=5))
    response = await store.reader(timeout=0.3).open("seg", 0, 10)
    with pytest.raises(StorageError, match="did not answer in time"):
        await body(response)
    store.replies.append(reply("", stall=5))  # never answers at all
    with pytest.raises(StorageError, match="did not answer in time"):
        await store.reader(timeout=0.3).open("seg", 0, 10)


async def test_stopping_early_closes_the_connection(store: Store) -> None:
    data = os.urandom(8 * RECEIVE)
    store.linger = True
    store.replies.append(reply(partial(data, 0, len(data), len(data)), data))
    chunks = (await store.reader().open("seg", 0, len(data))).chunks()
    first = await chunks.__anext__()
    assert data.startswith(first)
    await chunks.aclose()
    await asyncio.wait_for(store.closed_early.wait(), 5)


async def test_an_unreachable_store_is_an_error_after_retries() -> None:
    reader = RangeReader(lambda path: f"http://127.0.0.1:9/b/{path}", 5)
    with pytest.raises(StorageError, match=r"cannot connect to 127\.0\.0\.1:9"):
        await reader.open("seg", 0, 1)


async def test_only_plain_http_is_read_this_way() -> None:
    reader = RangeReader(lambda path: f"https://s3.example.com/b/{path}", 5)
    with pytest.raises(StorageError, match="need an http:// endpoint"):
        await reader.open("seg", 0, 1)
