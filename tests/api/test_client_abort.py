"""A client that hangs up half way is a normal event: one line in the log (no traceback,
nothing at ERROR), counted. Mid-upload, by the upload service, and the session stays usable
from its last checkpoint; mid-download, by the blob service, and the registry serves on. Raw
sockets send half a body (or read part of one) and close, over every driver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from pytest_aiohttp import AiohttpClient

from moorage.api.app import create_app
from moorage.registry.uploads import Uploads
from moorage.server import build_registry
from tests.support.app import (
    DRIVERS,
    Client,
    RegistryEnv,
    patch_chunk,
    push_blob,
    s3_settings,
    start_upload,
    with_query,
)
from tests.support.images import config_blob, digest_of, oci_manifest
from tests.support.metrics import sample
from tests.support.settings import make_settings
from tests.support.waiting import wait_until_async

NAME = "team/aborts"
EVERY = 64 * 1024
DATA = os.urandom(600_000)
SENT = 300_000  # bytes of the body sent before hanging up
KEPT = SENT // EVERY * EVERY


async def hang_up(
    client: Client, head: str, body: bytes, once: Callable[[], Awaitable[bool]] | None = None
) -> None:
    """Send a request head and part of its body, wait until ``once`` holds (the server got
    that far), then close the connection."""
    host, port = client.server.host, client.server.port
    _, writer = await asyncio.open_connection(host, port)
    writer.write(head.encode() + body)
    await writer.drain()
    if once is not None:
        await wait_until_async(once, "the server to receive that much", timeout=15)
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


def checkpoints_reach(uploads: Uploads, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return uploads.counters.checkpoints >= count

    return reached


def received_before_hang_up(caplog: pytest.LogCaptureFixture) -> int:
    """The bytes of the body the server got, as its log line says."""
    [line] = [r.getMessage() for r in caplog.records if "client aborted" in r.getMessage()]
    match = re.search(r"after (\d+) bytes", line)
    assert match is not None, line
    return int(match.group(1))


async def aborts_reach(uploads: Uploads, count: int) -> None:
    async def reached() -> bool:
        return uploads.counters.client_aborts >= count

    await wait_until_async(reached, f"{count} client abort(s) to be counted", timeout=15)


async def released(env: RegistryEnv, upload_id: str) -> None:
    async def no_lease() -> bool:
        upload = await env.registry.meta.get_upload(upload_id, NAME)
        return upload is not None and upload.lease_until == 0

    await wait_until_async(no_lease, "the upload's lease to be released", timeout=15)


def assert_logged_as_client_abort(caplog: pytest.LogCaptureFixture, *parts: str) -> None:
    lines = [r for r in caplog.records if "client aborted" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    message = lines[0].getMessage()
    assert lines[0].levelno == logging.INFO and "\n" not in message
    for part in parts:
        assert part in message, message
    assert all(r.exc_info is None for r in caplog.records), "a traceback was logged"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def resume_and_finish(client: Client, location: str) -> None:
    """Resume where the status says, as regclient does, and check the blob."""
    resp = await client.get(location)
    assert resp.status == 204
    assert resp.headers["Range"] == f"0-{KEPT - 1}"
    assert resp.headers["Upload-Offset"] == str(KEPT)
    resp = await patch_chunk(client, location, DATA[KEPT:], KEPT)
    assert resp.status == 202, await resp.text()
    resp = await client.put(with_query(location, digest=digest_of(DATA)))
    assert resp.status == 201, await resp.text()
    resp = await client.get(f"/v2/{NAME}/blobs/{digest_of(DATA)}")
    assert resp.status == 200 and await resp.read() == DATA


class ServedAsInProduction(TestServer):
    """aiohttp's test server cancels the handler of a request whose client went away;
    ``moorage serve`` does not (aiohttp's default), and its handlers see the read fail."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return await super()._make_runner(**{**kwargs, "handler_cancellation": False})


@pytest.fixture(params=DRIVERS)
async def env(
    request: pytest.FixtureRequest,
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> RegistryEnv:
    caplog.set_level(logging.INFO, "moorage")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the memory driver's database
    s3: dict[str, Any] = {}
    if request.param == "s3":
        s3 = s3_settings(request.getfixturevalue("seaweedfs"))
    settings = make_settings(
        s3,
        data=tmp_path / "data",
        workers=1,
        storage={"driver": request.param},
        uploads={"checkpoint": EVERY},
    )
    registry = build_registry(settings)
    client = await aiohttp_client(ServedAsInProduction(create_app(registry, settings)))
    return RegistryEnv(client, registry, settings, tmp_path)


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_hang_up_mid_session_body(
    env: RegistryEnv, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    client = env.client
    location = await start_upload(client, NAME)
    upload_id = location.rsplit("/", 1)[1]
    target = location if method == "PATCH" else with_query(location, digest=digest_of(DATA))
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: registry.test\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(DATA)}\r\n\r\n"
    )
    await hang_up(client, head, DATA[:SENT], checkpoints_reach(env.registry.uploads, KEPT // EVERY))
    await aborts_reach(env.registry.uploads, 1)
    await released(env, upload_id)
    assert_logged_as_client_abort(caplog, upload_id, NAME, f"stays at byte {KEPT}")
    assert KEPT <= received_before_hang_up(caplog) <= SENT
    await resume_and_finish(client, location)
    assert env.registry.uploads.counters.client_aborts == 1


async def test_hang_up_mid_single_post(env: RegistryEnv, caplog: pytest.LogCaptureFixture) -> None:
    client = env.client
    head = (
        f"POST /v2/{NAME}/blobs/uploads/?digest={digest_of(DATA)} HTTP/1.1\r\n"
        f"Host: registry.test\r\nContent-Length: {len(DATA)}\r\n\r\n"
    )
    await hang_up(client, head, DATA[:SENT], checkpoints_reach(env.registry.uploads, 1))
    await aborts_reach(env.registry.uploads, 1)
    assert_logged_as_client_abort(caplog, NAME, "dropped")
    assert EVERY <= received_before_hang_up(caplog) <= SENT

    async def nothing_left() -> bool:
        return await env.registry.meta.expired_uploads(1e12) == []

    await wait_until_async(nothing_left, "the session nobody can resume to be dropped", timeout=15)
    resp = await client.get(f"/v2/{NAME}/blobs/{digest_of(DATA)}")
    assert resp.status == 404
    await push_blob(client, NAME, DATA)


async def test_hang_up_mid_manifest(env: RegistryEnv, caplog: pytest.LogCaptureFixture) -> None:
    client = env.client
    config = config_blob("aborted")
    await push_blob(client, NAME, config)
    manifest = oci_manifest(config, [])
    head = (
        f"PUT /v2/{NAME}/manifests/v1 HTTP/1.1\r\nHost: registry.test\r\n"
        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
        f"Content-Length: {len(manifest)}\r\n\r\n"
    )

    async def logged() -> bool:
        return any("client aborted" in r.getMessage() for r in caplog.records)

    await hang_up(client, head, manifest[: len(manifest) // 2])
    await wait_until_async(logged, "the abort to be logged", timeout=15)
    assert_logged_as_client_abort(caplog, f"PUT /v2/{NAME}/manifests/v1", "bytes")
    resp = await client.get(f"/v2/{NAME}/manifests/v1")
    assert resp.status == 404


async def test_hang_up_mid_download(env: RegistryEnv, caplog: pytest.LogCaptureFixture) -> None:
    client = env.client
    blob = os.urandom(32 * 1024 * 1024)  # far more than the sockets' buffers hold
    await push_blob(client, NAME, blob)
    sent_before = sample("moorage_http_sent_bytes_total", route="blob")
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v2/{NAME}/blobs/{digest_of(blob)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(1024 * 1024)
    writer.close()  # unread data: the kernel resets the connection
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()

    async def counted() -> bool:
        return env.registry.blobs.counters.client_aborts == 1

    await wait_until_async(counted, "the aborted download to be counted", timeout=15)
    # What the handler wrote before the reset, not the Content-Length it announced.
    sent = sample("moorage_http_sent_bytes_total", route="blob") - sent_before
    assert 1024 * 1024 <= sent < len(blob)
    lines = [r for r in caplog.records if "client aborted the download" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, lines
    assert digest_of(blob) in lines[0].getMessage() and NAME in lines[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records), "a traceback was logged"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    resp = await client.get(f"/v2/{NAME}/blobs/{digest_of(blob)}")
    assert resp.status == 200 and await resp.read() == blob
