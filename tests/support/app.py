"""The real registry app behind an in-process aiohttp test client, and requests to it.

Fixtures (a conftest imports those its tests use): ``env`` runs each core test over every
storage driver: filesystem, memory and S3 (SeaweedFS); ``fs_env`` is the filesystem only (for
checks on the files themselves); ``make_env`` builds a registry with other settings (auth,
TTLs, limits); ``client`` is ``env``'s client.

Requests: uploads (``start_upload``, ``push_blob``, ``push_blob_chunked``, ...), manifests
(``push_manifest``, ``get_manifest``), whole images of ``tests.support.images``
(``push_image``, ``assert_image_intact``), listings, OCI errors (``assert_error``), and the
``_moorage`` extension's tag policy and history.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp import ClientResponse, web, web_fileresponse
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from moorage.api.app import create_app
from moorage.config import Settings
from moorage.registry.service import Registry
from moorage.server import build_registry
from tests.support.clocks import SteppingClock
from tests.support.images import OCI_MANIFEST, Blob, Image, digest_of, seeded_image
from tests.support.seaweedfs import BUCKET, SeaweedFS
from tests.support.settings import make_settings
from tests.support.waiting import wait_until_async

Client = TestClient[web.Request, web.Application]

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
DRIVERS = ["filesystem", "memory", "s3"]


# -- the registry under test -------------------------------------------------------------------


@dataclass
class Requests:
    """The requests the app's handlers have started and finished (a middleware counts)."""

    started: int = 0
    finished: int = 0

    @property
    def in_flight(self) -> int:
        return self.started - self.finished

    @web.middleware
    async def count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.started += 1
        try:
            return await handler(request)
        finally:
            self.finished += 1


@dataclass
class RegistryEnv:
    client: Client
    registry: Registry
    settings: Settings
    #: The test's own directory; the data directory is nested inside it so that anything
    #: escaping the data directory still lands somewhere the test can see.
    root: Path
    requests: Requests = field(default_factory=Requests)
    #: The registry's clock (what its store stamps, when its uploads expire): wall time
    #: until a test moves it on (``clock.advance``).
    clock: SteppingClock = field(default_factory=lambda: SteppingClock(time.time()))

    @property
    def data(self) -> Path:
        return self.settings.data

    @property
    def driver(self) -> str:
        return self.settings.storage.driver

    async def requests_done(self) -> None:
        """Wait until every request the app received has run to its end: one whose client
        went away may still be at work after the client has given up on it."""
        await wait_until_async(
            lambda: self.requests.in_flight == 0,
            lambda: f"the registry to finish its requests ({self.requests.in_flight} running)",
        )


MakeEnv = Callable[..., Awaitable[RegistryEnv]]


def s3_settings(server: SeaweedFS) -> dict[str, Any]:
    """Settings for the session's SeaweedFS, under a key prefix of this registry's own."""
    s3 = {
        "endpoint": server.endpoint,
        "region": server.region,
        "bucket": BUCKET,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "prefix": f"api-{uuid.uuid4().hex[:16]}",
    }
    return {"storage": {"s3": s3}}


@pytest.fixture
async def make_env(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeEnv]:
    # The memory driver keeps its SQLite file in a fresh temporary directory: keep it in
    # the test's own directory rather than the system's.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    counter = 0

    async def make(storage_driver: str = "filesystem", **sections: Any) -> RegistryEnv:
        """A registry on ``storage_driver``; ``sections`` are config file tables, such as
        ``uploads={"ttl": 60.0}``."""
        nonlocal counter
        counter += 1
        root = tmp_path / f"env{counter}"
        data = root / "srv" / "registry" / "data"
        data.mkdir(parents=True)
        s3 = s3_settings(request.getfixturevalue("seaweedfs")) if storage_driver == "s3" else {}
        settings = make_settings(
            s3, {"data": data, "workers": 1, "storage": {"driver": storage_driver}}, sections
        )
        clock = SteppingClock(time.time())
        registry = build_registry(settings, clock)
        requests = Requests()
        app = create_app(registry, settings)
        app.middlewares.append(requests.count)
        client = await aiohttp_client(app)
        return RegistryEnv(client, registry, settings, root, requests, clock)

    yield make
    # aiohttp's FileResponse closes the served file in an executor without waiting; let those
    # closes finish before the loop goes away, or the files are reported as leaked.
    pending = list(getattr(web_fileresponse, "_CLOSE_FUTURES", ()))
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


@pytest.fixture(params=DRIVERS)
async def env(request: pytest.FixtureRequest, make_env: MakeEnv) -> RegistryEnv:
    """A fresh registry, once per storage driver."""
    return await make_env(request.param)


@pytest.fixture
async def fs_env(make_env: MakeEnv) -> RegistryEnv:
    return await make_env("filesystem")


@pytest.fixture
def client(env: RegistryEnv) -> Client:
    return env.client


#: The users of ``secured``: an administrator (``auth.admins``) and one who is not.
PASSWORDS = {"admin": "admin-pw", "alice": "alice-pw"}


def basic(user: str) -> dict[str, str]:
    """The Authorization header of one of ``PASSWORDS``' users."""
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def secured(make_env: MakeEnv, tmp_path: Path) -> RegistryEnv:
    """A registry on the filesystem behind basic auth, ``admin`` its administrator."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
            for user, pw in PASSWORDS.items()
        )
    )
    return await make_env(auth={"htpasswd": htpasswd, "admins": ["admin"]})


# -- requests ----------------------------------------------------------------------------------


def as_body(data: bytes) -> bytes | io.BytesIO:
    """A request body; large ones as a stream (aiohttp warns about big raw bytes)."""
    return io.BytesIO(data) if len(data) > 512 * 1024 else data


async def stream(data: bytes, piece: int = 1000) -> AsyncIterator[bytes]:
    """A body sent with chunked transfer encoding (no Content-Length)."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        await asyncio.sleep(0)  # one piece per turn of the event loop, as a network delivers


def with_query(location: str, **params: str) -> str:
    joined = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{location}{'&' if '?' in location else '?'}{joined}"


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


# -- blobs and uploads -------------------------------------------------------------------------


async def start_upload(client: Client, name: str, query: str = "") -> str:
    """POST an upload session; its Location."""
    resp = await client.post(
        f"/v2/{name}/blobs/uploads/{query}", headers={"Content-Length": "0"}, data=b""
    )
    assert resp.status == 202, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith(f"/v2/{name}/blobs/uploads/"), location
    return location


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


# -- manifests and images ----------------------------------------------------------------------


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


async def push_image(
    client: Client, name: str, image: Image, tag: str | None = None, *, chunked: bool = False
) -> Image:
    """Push ``image``: its blobs (``chunked``: in 1000-byte PATCHes), its children by digest,
    then its manifest as ``tag`` (or by digest)."""
    for blob in image.all_blobs:
        if chunked:
            await push_blob_chunked(client, name, blob, 1000)
        else:
            await push_blob(client, name, blob)
    for part in image.walk():
        reference = tag if part is image and tag is not None else part.digest
        await push_manifest(client, name, reference, part.manifest, part.media_type)
    return image


async def push_seeded(
    client: Client, name: str, tag: str, seed: str, *, layers: int = 2, chunked: bool = False
) -> Image:
    """Push ``seeded_image(seed)`` as ``name:tag``."""
    return await push_image(client, name, seeded_image(seed, layers=layers), tag, chunked=chunked)


async def assert_image_intact(
    client: Client, name: str, image: Image, tags: Sequence[str] = ()
) -> None:
    """Every part of the image is served with its exact bytes and digests, by digest and by
    each of ``tags``."""
    for reference in (*tags, image.digest):
        resp, body = await get_manifest(client, name, reference)
        assert resp.status == 200, f"{name}:{reference} is gone: {body[:200]!r}"
        assert body == image.manifest, f"{name}:{reference} now serves {body[:300]!r}"
        assert resp.headers["Docker-Content-Digest"] == image.digest
        assert resp.headers["Content-Type"] == image.media_type
    for blob in image.all_blobs:
        resp = await client.get(f"/v2/{name}/blobs/{blob.digest}")
        assert resp.status == 200, await resp.text()
        data = await resp.read()
        assert data == blob.data
        assert digest_of(data, blob.algorithm) == blob.digest
        assert resp.headers["Docker-Content-Digest"] == blob.digest
        head = await client.head(f"/v2/{name}/blobs/{blob.digest}")
        assert head.status == 200
        assert head.headers["Content-Length"] == str(blob.size)


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


async def tag_digest(client: Client, name: str, tag: str) -> str | None:
    """The digest ``name:tag`` serves, or None if it is not there."""
    resp = await client.head(f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    if resp.status == 404:
        return None
    assert resp.status == 200, resp.status
    return resp.headers["Docker-Content-Digest"]


async def prepare(client: Client, name: str, seed: str) -> bytes:
    """Push the blobs of a small image (``seeded_image(seed, layers=1)``) into ``name``; its
    manifest, not pushed."""
    image = seeded_image(seed, layers=1)
    for blob in image.blobs:
        await push_blob(client, name, blob)
    return image.manifest


# -- the _moorage extension: tag policy and history --------------------------------------------

RULES = "/v2/_moorage/policy/rules"
VERSION_TAGS = [
    "regex:v?[0-9]+(\\.[0-9]+)+(-[0-9A-Za-z.-]+)?",
    "regex:[0-9]{4}-[0-9]{2}-[0-9]{2}",
]
#: The README's three example rules, ordered so that ``dev`` wins: "dev/** is all mutable",
#: "every tag that looks like a version is immutable everywhere", "in prod/** every tag
#: except latest is immutable".
POLICY: dict[str, Any] = {
    "default": "mutable",
    "rules": [
        {"name": "dev", "repositories": ["dev/**"], "mode": "mutable"},
        {
            "name": "versions",
            "tags": VERSION_TAGS,
            "mode": "immutable",
            "description": "v1.2.3, 1.2, 2018-05-12 never move",
        },
        {
            "name": "prod",
            "repositories": "prod/**",
            "except_tags": ["latest"],
            "mode": "immutable",
        },
    ],
}


async def put_policy(
    client: Client, document: Any, headers: dict[str, str] | None = None
) -> ClientResponse:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return await client.put(
        RULES, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )


async def install(client: Client, document: Any = POLICY, **headers: str) -> dict[str, Any]:
    """Install a tag policy (the README's by default); the registry's answer."""
    resp = await put_policy(client, document, headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def get_json(
    client: Client,
    path: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    resp = await client.get(path, params=params, headers=headers)
    assert resp.status == 200, f"GET {path} {params}: {resp.status} {await resp.text()}"
    assert resp.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = await resp.json()
    return body


async def history(
    client: Client,
    name: str,
    tag: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The tag's history events, newest first."""
    body = await get_json(
        client, f"/v2/{name}/_moorage/tags/history", {"tag": tag, **(params or {})}, headers
    )
    assert (body["name"], body["tag"]) == (name, tag)
    events: list[dict[str, Any]] = body["events"]
    return events


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
