"""Building blocks for the HTTP API tests: content, manifests, pushes, raw requests, checks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

Client = TestClient[web.Request, web.Application]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def as_body(data: bytes) -> bytes | io.BytesIO:
    """A request body; large ones as a stream (aiohttp warns about big raw bytes)."""
    return io.BytesIO(data) if len(data) > 512 * 1024 else data


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@dataclass(frozen=True)
class Blob:
    """Some bytes with the descriptor a manifest uses for them."""

    data: bytes
    media_type: str = OCI_LAYER
    algorithm: str = "sha256"

    @property
    def digest(self) -> str:
        return digest_of(self.data, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def config_blob(seed: str, media_type: str = OCI_CONFIG, algorithm: str = "sha256") -> Blob:
    body = {"architecture": "amd64", "os": "linux", "seed": seed, "rootfs": {"type": "layers"}}
    return Blob(json.dumps(body, sort_keys=True).encode(), media_type, algorithm)


def layer_blob(
    seed: str, size: int = 1024, media_type: str = OCI_LAYER, algorithm: str = "sha256"
) -> Blob:
    """Deterministic pseudo-random bytes (so ranges and digests are meaningful)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return Blob(bytes(out[:size]), media_type, algorithm)


EMPTY_CONFIG = Blob(b"{}", OCI_EMPTY)


def dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, indent=2, sort_keys=True).encode()


def oci_manifest(
    config: Blob,
    layers: Iterable[Blob] = (),
    *,
    artifact_type: str | None = None,
    subject: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    with_media_type: bool = True,
) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if with_media_type:
        body["mediaType"] = OCI_MANIFEST
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    if subject is not None:
        body["subject"] = dict(subject)
    if annotations is not None:
        body["annotations"] = dict(annotations)
    return dumps(body)


def docker_manifest(config: Blob, layers: Iterable[Blob] = ()) -> bytes:
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
    )


def manifest_descriptor(
    payload: bytes, media_type: str = OCI_MANIFEST, algorithm: str = "sha256", **extra: Any
) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": digest_of(payload, algorithm),
        "size": len(payload),
        **extra,
    }


def platform(architecture: str, os_name: str = "linux") -> dict[str, str]:
    return {"architecture": architecture, "os": os_name}


def oci_index(
    manifests: Iterable[Mapping[str, Any]],
    *,
    artifact_type: str | None = None,
    subject: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [dict(m) for m in manifests],
    }
    if artifact_type is not None:
        body["artifactType"] = artifact_type
    if subject is not None:
        body["subject"] = dict(subject)
    if annotations is not None:
        body["annotations"] = dict(annotations)
    return dumps(body)


def docker_manifest_list(manifests: Iterable[Mapping[str, Any]]) -> bytes:
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [dict(m) for m in manifests],
        }
    )


# -- requests ---------------------------------------------------------------------------------


async def assert_error(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The response is an OCI error with this status and (first) code; its first error."""
    text = await response.text()
    assert response.status == status, f"expected {status} {code}, got {response.status}: {text}"
    body = json.loads(text)
    assert body["errors"][0]["code"] == code, text
    assert response.headers.get(API_VERSION[0]) == API_VERSION[1]
    entry = body["errors"][0]
    assert isinstance(entry, dict)
    return entry


async def start_upload(client: Client, name: str, query: str = "") -> str:
    """POST an upload session; its Location."""
    resp = await client.post(
        f"/v2/{name}/blobs/uploads/{query}", headers={"Content-Length": "0"}, data=b""
    )
    assert resp.status == 202, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith(f"/v2/{name}/blobs/uploads/"), location
    return location


def with_query(location: str, **params: str) -> str:
    joined = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{location}{'&' if '?' in location else '?'}{joined}"


async def push_blob(client: Client, name: str, blob: Blob | bytes) -> str:
    """Monolithic POST then PUT; the digest."""
    if isinstance(blob, bytes):
        blob = Blob(blob)
    location = await start_upload(client, name)
    resp = await client.put(
        with_query(location, digest=blob.digest),
        data=as_body(blob.data),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v2/{name}/blobs/{blob.digest}"
    assert resp.headers["Docker-Content-Digest"] == blob.digest
    return blob.digest


async def push_blob_single_post(client: Client, name: str, blob: Blob) -> str:
    resp = await client.post(
        f"/v2/{name}/blobs/uploads/?digest={blob.digest}",
        data=as_body(blob.data),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v2/{name}/blobs/{blob.digest}"
    return blob.digest


async def patch_chunk(client: Client, location: str, data: bytes, start: int) -> ClientResponse:
    return await client.patch(
        location,
        data=as_body(data),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
            "Content-Length": str(len(data)),
        },
    )


async def push_blob_chunked(client: Client, name: str, blob: Blob, chunk_size: int) -> str:
    """POST, PATCH with Content-Range per chunk, PUT without body; the digest."""
    location = await start_upload(client, name)
    offset = 0
    while offset < blob.size:
        chunk = blob.data[offset : offset + chunk_size]
        resp = await patch_chunk(client, location, chunk, offset)
        assert resp.status == 202, await resp.text()
        offset += len(chunk)
        assert resp.headers["Range"] == f"0-{offset - 1}"
        location = resp.headers["Location"]
    resp = await client.put(with_query(location, digest=blob.digest))
    assert resp.status == 201, await resp.text()
    assert resp.headers["Docker-Content-Digest"] == blob.digest
    return blob.digest


async def stream(data: bytes, piece: int = 1000) -> AsyncIterator[bytes]:
    """A body sent with chunked transfer encoding (no Content-Length)."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        await asyncio.sleep(0)


async def push_manifest(
    client: Client,
    name: str,
    reference: str,
    payload: bytes,
    media_type: str | None = OCI_MANIFEST,
    algorithm: str = "sha256",
) -> ClientResponse:
    headers = {} if media_type is None else {"Content-Type": media_type}
    resp = await client.put(
        f"/v2/{name}/manifests/{reference}", data=as_body(payload), headers=headers
    )
    assert resp.status == 201, await resp.text()
    digest = digest_of(payload, algorithm)
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Location"] == f"/v2/{name}/manifests/{digest}"
    return resp


async def get_manifest(
    client: Client, name: str, reference: str, accept: str | None = None
) -> tuple[ClientResponse, bytes]:
    headers = {} if accept is None else {"Accept": accept}
    resp = await client.get(f"/v2/{name}/manifests/{reference}", headers=headers)
    return resp, await resp.read()


async def tags(client: Client, name: str) -> list[str]:
    resp = await client.get(f"/v2/{name}/tags/list")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["name"] == name
    result = body["tags"]
    assert isinstance(result, list)
    return result


async def catalog(client: Client) -> list[str]:
    resp = await client.get("/v2/_catalog")
    assert resp.status == 200, await resp.text()
    result = (await resp.json())["repositories"]
    assert isinstance(result, list)
    return result


# -- a known image, and checking it survived ---------------------------------------------------


@dataclass
class Image:
    name: str
    tag: str
    config: Blob
    layers: list[Blob]
    manifest: bytes
    media_type: str = OCI_MANIFEST
    extra_tags: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


async def push_image(
    client: Client, name: str, tag: str, seed: str, *, layers: int = 2, chunked: bool = False
) -> Image:
    config = config_blob(seed)
    blobs = [layer_blob(f"{seed}-{i}", 3000 + 517 * i) for i in range(layers)]
    for blob in (config, *blobs):
        if chunked:
            await push_blob_chunked(client, name, blob, 1000)
        else:
            await push_blob(client, name, blob)
    manifest = oci_manifest(config, blobs, annotations={"seed": seed})
    await push_manifest(client, name, tag, manifest)
    return Image(name, tag, config, blobs, manifest)


async def assert_image_intact(client: Client, image: Image) -> None:
    """Every part of the image is served with its exact bytes and digests."""
    for reference in (image.tag, *image.extra_tags, image.digest):
        resp, body = await get_manifest(client, image.name, reference)
        assert resp.status == 200, f"{image.name}:{reference} is gone: {body[:200]!r}"
        assert body == image.manifest, f"{image.name}:{reference} now serves {body[:300]!r}"
        assert resp.headers["Docker-Content-Digest"] == image.digest
        assert resp.headers["Content-Type"] == image.media_type
    for blob in image.blobs:
        resp = await client.get(f"/v2/{image.name}/blobs/{blob.digest}")
        assert resp.status == 200, await resp.text()
        data = await resp.read()
        assert data == blob.data
        assert digest_of(data, blob.algorithm) == blob.digest
        assert resp.headers["Docker-Content-Digest"] == blob.digest
        head = await client.head(f"/v2/{image.name}/blobs/{blob.digest}")
        assert head.status == 200
        assert head.headers["Content-Length"] == str(blob.size)


# -- raw HTTP, for requests an HTTP client would normalise or refuse to send -------------------


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        errors = self.json()["errors"]
        code = errors[0]["code"]
        assert isinstance(code, str)
        return code


def _parse_response(raw: bytes) -> RawResponse:
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
        return RawResponse(status, headers, bytes(body))
    if "Content-Length" in headers:
        rest = rest[: int(headers["Content-Length"])]
    return RawResponse(status, headers, rest)


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
    client: Client,
    request: bytes,
    *,
    half_close: bool = False,
    timeout: float = 10.0,
) -> bytes:
    """Send exact bytes to the test server; read one response (or until it closes)."""
    host, port = client.server.host, client.server.port
    assert port is not None
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
    client: Client,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """One request with the path sent byte for byte (no normalisation, no re-encoding)."""
    all_headers = {"Host": "registry.test", "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers.setdefault("Content-Length", str(len(body)))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in all_headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return _parse_response(await raw_exchange(client, request))


# -- the filesystem around the data directory --------------------------------------------------


Snapshot = dict[str, tuple[int, int]]


def snapshot(root: Path, *exclude: Path) -> Snapshot:
    """Every file and directory under ``root`` (except ``exclude``): (size, mtime_ns)."""
    result: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in exclude]
        for name in [*dirnames, *filenames]:
            path = here / name
            info = path.lstat()
            result[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return result
