"""Plain HTTP to a registry, for tests: one ``Reply`` type for every way of asking.

- ``request``: a small synchronous client (http.client) for a running registry, over plain
  HTTP or HTTPS given an ``ssl.SSLContext``; ``push_blob`` and ``push_image`` (an ``Image`` from
  ``tests.support.images``, its children and blobs first) use it.
- ``raw_request`` and ``raw_exchange``: exact bytes over a socket (asyncio), for requests an
  HTTP client would normalise or refuse to send (``..`` in paths, ``%2F``, short bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from multidict import CIMultiDict

from tests.support.images import Image, sha256


@dataclass
class Reply:
    status: int
    #: Case-insensitive, as header names are (a proxy may send them in lower case).
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def code(self) -> str:
        """The (first) OCI error code of the body."""
        code = self.json()["errors"][0]["code"]
        assert isinstance(code, str), self.body
        return code


# -- a running registry ------------------------------------------------------------------------


def request(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """One request on a new connection (so multi-worker servers spread them); over HTTPS
    when given ``tls``, the context that trusts the server."""
    host, port = address.rsplit(":", 1)
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    else:
        conn = http.client.HTTPSConnection(host, int(port), timeout=30, context=tls)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, CIMultiDict(response.getheaders()), response.read())
    finally:
        conn.close()


def location_path(reply: Reply) -> str:
    """The path (and query) of the reply's Location, which may be a whole URL."""
    location = reply.header("Location")
    assert location, f"no Location in {reply.status} {reply.body!r}"
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(path: str, **params: str) -> str:
    separator = "&" if "?" in path else "?"
    return path + separator + "&".join(f"{k}={v}" for k, v in params.items())


def push_blob(
    address: str,
    repo: str,
    data: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Upload a blob (POST, then PUT with the whole body); its digest. ``headers`` go with
    every request (``Authorization``)."""
    reply = request(address, "POST", f"/v2/{repo}/blobs/uploads/", None, headers, tls=tls)
    assert reply.status == 202, reply.body
    digest = sha256(data)
    path = with_query(location_path(reply), digest=digest)
    reply = request(
        address,
        "PUT",
        path,
        data,
        {**(headers or {}), "Content-Type": "application/octet-stream"},
        tls=tls,
    )
    assert reply.status == 201, reply.body
    return digest


def push_manifest(
    address: str,
    repo: str,
    reference: str,
    payload: bytes,
    media_type: str,
    *,
    tls: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """PUT a manifest; checks it was created under the digest of its bytes."""
    reply = request(
        address,
        "PUT",
        f"/v2/{repo}/manifests/{reference}",
        payload,
        {**(headers or {}), "Content-Type": media_type},
        tls=tls,
    )
    assert reply.status == 201, (reply.status, reply.body)
    assert reply.header("Docker-Content-Digest") == sha256(payload)
    return reply


def push_image(
    address: str,
    repo: str,
    image: Image,
    tag: str | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> Image:
    """Push ``image``: every blob, every child manifest (by digest), then the manifest as
    ``tag`` (or by digest). Pushing another image to the same tag moves the tag."""
    for blob in image.all_blobs:
        push_blob(address, repo, blob.data, tls=tls, headers=headers)
    for part in image.walk():
        reference = tag if part is image and tag is not None else part.digest
        push_manifest(
            address, repo, reference, part.manifest, part.media_type, tls=tls, headers=headers
        )
    return image


def race(
    addresses: list[str], tag: str, images: list[Image], repository: str
) -> list[tuple[int, int, bytes]]:
    """Every image's manifest PUT to ``repository:tag`` at once (threads released together),
    alternating between the registries at ``addresses``: (index, status, body) of each."""
    barrier = threading.Barrier(len(images))
    statuses: list[tuple[int, int, bytes]] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        image = images[index]
        barrier.wait()
        reply = request(
            addresses[index % len(addresses)],
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            image.manifest,
            {"Content-Type": image.media_type},
        )
        with lock:
            statuses.append((index, reply.status, reply.body))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


# -- exact bytes ---------------------------------------------------------------------------------


class _Server(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int | None: ...


class Served(Protocol):
    """What serves the requests: an in-process test client (``client.server``)."""

    @property
    def server(self) -> _Server: ...


def _host_port(target: str | Served) -> tuple[str, int]:
    if isinstance(target, str):
        host, port = target.rsplit(":", 1)
        return host, int(port)
    assert target.server.port is not None
    return target.server.host, target.server.port


def parse_response(raw: bytes) -> Reply:
    """One HTTP/1.1 response as received (Content-Length or chunked)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.add(key.strip(), value.strip())
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return Reply(status, headers, bytes(body))
    if "Content-Length" in headers:
        rest = rest[: int(headers["Content-Length"])]
    return Reply(status, headers, rest)


def _complete(raw: bytes) -> bool:
    """Whether ``raw`` holds one whole response (so a lingering server need not close)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    lines = head.decode("latin-1").lower().split("\r\n")
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip() == "content-length":
            return len(rest) >= int(value.strip())
        if key.strip() == "transfer-encoding" and "chunked" in value:
            return rest.endswith(b"0\r\n\r\n")
    return False


async def raw_exchange(
    target: str | Served,
    request: bytes,
    *,
    half_close: bool = False,
    timeout: float = 10.0,
) -> bytes:
    """Send exact bytes to ``target`` (host:port, or an in-process test client's server);
    read one response (or until the server closes). ``half_close``: close our side of the
    connection once the request is sent."""
    host, port = _host_port(target)
    reader, writer = await asyncio.open_connection(host, port)
    received = bytearray()
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while not _complete(bytes(received)):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
        return bytes(received)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def raw_request(
    target: str | Served,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> Reply:
    """One request with the path sent byte for byte (no normalisation, no re-encoding)."""
    all_headers = {"Host": "registry.test", "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers.setdefault("Content-Length", str(len(body)))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in all_headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return parse_response(await raw_exchange(target, request))
