"""Ranged GETs of segment bytes from a plain-HTTP S3 endpoint, read straight off the socket.

Serving a blob from S3 is a proxy: every byte crosses the network from the store to the
registry, then from the registry to its client. Through obstore, each chunk is received on a
tokio thread, gathered into a zeroed buffer, and handed to the event loop across threads;
with the store on the same cores (SeaweedFS or MinIO in the cluster), that CPU is taken from
the store. Here the event loop itself receives the body: ``sock_recv`` into a fresh
``bytes`` (no zeroing, no gathering), 1 MiB at a time, which the HTTP server then sends.
Measured on SeaweedFS (``benchmarks/README.md``): a third less registry CPU per byte, and
faster downloads.

A request is signed the way a presigned URL is (``Bucket.sign_get``, query-string SigV4,
computed locally), sent on a new connection with a ``Range`` header and
``Connection: close``, and its response head parsed here; the body is never buffered
beyond one chunk. Only ``http://`` endpoints are read this way: over TLS the driver keeps
obstore's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncGenerator, Callable
from urllib.parse import urlsplit

from moorage.storage.base import StorageError

#: How much one receive asks for (and so the largest chunk ``chunks`` yields).
RECEIVE = 1 << 20
#: The response head (status line and headers) must fit in this many bytes.
MAX_HEAD = 64 * 1024
#: Attempts to open a range (connect, send, read the head) before giving up, and the wait
#: before the second attempt (doubled each time).
ATTEMPTS = 3
FIRST_BACKOFF = 0.1

_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class RangeNotFound(StorageError):
    """The store answered 404: the object is not there."""


class _Retry(StorageError):
    """A failure worth another attempt (a refused connection, a 5xx, a 429)."""


class RangeResponse:
    """One ranged GET whose head was read: ``chunks`` streams the rest of its body."""

    def __init__(
        self, sock: socket.socket, first: bytes, length: int, deadline: float, what: str
    ) -> None:
        self._sock = sock
        self._first = first
        self._length = length
        self._deadline = deadline
        self._what = what

    def close(self) -> None:
        self._sock.close()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body's bytes, exactly the range asked for; the connection is closed at the end,
        or when the consumer stops early."""
        loop = asyncio.get_running_loop()
        left = self._length
        try:
            if self._first:
                first, self._first = self._first, b""
                left -= len(first)
                yield first
            while left > 0:
                async with _deadline(self._deadline, self._what):
                    chunk = await loop.sock_recv(self._sock, min(RECEIVE, left))
                if not chunk:
                    raise StorageError(
                        f"{self._what}: the store closed the connection"
                        f" {left} bytes before the end of the range"
                    )
                left -= len(chunk)
                yield chunk
        except OSError as exc:
            raise StorageError(f"{self._what}: {exc}") from exc
        finally:
            self._sock.close()


@contextlib.asynccontextmanager
async def _deadline(when: float, what: str) -> AsyncGenerator[None, None]:
    try:
        async with asyncio.timeout_at(when):
            yield
    except TimeoutError:
        raise StorageError(f"{what}: the store did not answer in time") from None


class RangeReader:
    """Opens ranged GETs of the objects ``sign`` makes presigned URLs for.

    ``sign(path)`` returns a presigned ``http://`` GET URL of the object at ``path``;
    ``timeout`` bounds each request, its whole body included (seconds).
    """

    def __init__(self, sign: Callable[[str], str], timeout: float) -> None:
        self._sign = sign
        self._timeout = timeout

    async def open(self, path: str, start: int, end: int) -> RangeResponse:
        """GET bytes ``start`` to ``end`` (exclusive) of the object at ``path``, up to its
        head. Raises ``RangeNotFound`` if the object is missing, ``StorageError`` for any
        other failure (after ``ATTEMPTS`` tries for transient ones)."""
        what = f"GET {path} bytes {start}-{end - 1}"
        backoff = FIRST_BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._open_once(path, start, end, what)
            except _Retry:
                if attempt == ATTEMPTS:
                    raise
            await asyncio.sleep(backoff)
            backoff *= 2
        raise AssertionError("unreachable")

    async def _open_once(self, path: str, start: int, end: int, what: str) -> RangeResponse:
        url = urlsplit(self._sign(path))
        if url.scheme != "http" or url.hostname is None:
            raise StorageError(f"{what}: ranged reads need an http:// endpoint, not {url.scheme}")
        deadline = asyncio.get_running_loop().time() + self._timeout
        target = f"{url.path}?{url.query}" if url.query else url.path
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Range: bytes={start}-{end - 1}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        sock = await _connect(url.hostname, url.port or 80, deadline, what)
        try:
            async with _deadline(deadline, what):
                try:
                    await asyncio.get_running_loop().sock_sendall(sock, request)
                except OSError as exc:
                    raise _Retry(f"{what}: {exc}") from exc
                status, headers, rest = await _read_head(sock, what)
            if status == 404:
                raise RangeNotFound(f"{what}: not found")
            if status not in (200, 206):
                detail = await _error_detail(sock, rest, deadline)
                failure = f"{what}: the store answered {status}{detail}"
                if status >= 500 or status == 429:
                    raise _Retry(failure)
                raise StorageError(failure)
            length = _body_length(status, headers, start, end, what)
            return RangeResponse(sock, rest, length, deadline, what)
        except BaseException:
            sock.close()
            raise


async def _connect(host: str, port: int, deadline: float, what: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    failure: OSError | None = None
    async with _deadline(deadline, what):
        try:
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _Retry(f"{what}: cannot resolve {host}: {exc}") from exc
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
                return sock
            except OSError as exc:
                sock.close()
                failure = exc
            except BaseException:
                sock.close()
                raise
    raise _Retry(f"{what}: cannot connect to {host}:{port}: {failure}")


async def _read_head(sock: socket.socket, what: str) -> tuple[int, dict[str, str], bytes]:
    """Receive up to the end of the response head: its status, its headers (names in lower
    case) and the body bytes that came with it."""
    loop = asyncio.get_running_loop()
    received = b""
    while True:
        try:
            chunk = await loop.sock_recv(sock, MAX_HEAD)
        except OSError as exc:
            raise _Retry(f"{what}: {exc}") from exc
        if not chunk:
            raise _Retry(f"{what}: the store closed the connection before answering")
        received += chunk
        end = received.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(received) > MAX_HEAD:
            raise StorageError(f"{what}: the store's response head is over {MAX_HEAD} bytes")
    lines = received[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise StorageError(f"{what}: the store answered {lines[0][:100]!r}, not HTTP/1.x")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, received[end + 4 :]


def _body_length(status: int, headers: dict[str, str], start: int, end: int, what: str) -> int:
    """Check that the response carries exactly the range asked for; return its length."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise StorageError(f"{what}: the store sent a chunked body; a range has a length")
    try:
        length = int(headers["content-length"])
    except (KeyError, ValueError):
        raise StorageError(f"{what}: the store sent no Content-Length") from None
    if status == 206:
        expected = f"bytes {start}-{end - 1}/"
        if not headers.get("content-range", "").startswith(expected):
            raise StorageError(f"{what}: the store sent range {headers.get('content-range')!r}")
    elif start != 0:
        raise StorageError(f"{what}: the store ignored the Range header")
    if length != end - start:
        raise StorageError(f"{what}: the store sent {length} bytes, not {end - start}")
    return length


async def _error_detail(sock: socket.socket, received: bytes, deadline: float) -> str:
    """The S3 error code from an error response's body, as ``": <Code>"``, if one comes
    within a second (the body is small XML)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout_at(min(deadline, loop.time() + 1.0)):
            while len(received) < MAX_HEAD and not _ERROR_CODE.search(received):
                chunk = await loop.sock_recv(sock, MAX_HEAD)
                if not chunk:
                    break
                received += chunk
    found = _ERROR_CODE.search(received)
    return f": {found.group(1).decode('latin-1')}" if found else ""
