"""Uploads survive a registry killed mid-stream.

A real ``moorage serve`` (one worker, so SIGKILL takes the process that streams) receives a
body, monolithic (POST, then one PUT with the whole body and the digest) or streamed (one
PATCH); it is killed at a random byte of the body and started again on the same data. The
session's status must then name a checkpoint boundary no further than what was sent
(``Range: 0--1`` when no checkpoint was reached), and the upload must resume there at once
(the dead worker's lease is taken over), complete, and read back byte for byte.

Kill points come from a seeded random generator; ``MOORAGE_TEST_SEED`` replays a run, and
every assertion message names the seed.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.http import Reply, location_path, request, with_query
from tests.support.images import sha256
from tests.support.postgres import PostgresServer
from tests.support.seaweedfs import SeaweedFS
from tests.support.server import RunningRegistry, start_moorage
from tests.support.topology import replica_environment
from tests.support.waiting import wait_until

MIB = 1024 * 1024
SEED = int(os.environ.get("MOORAGE_TEST_SEED") or random.SystemRandom().randrange(1 << 32))
#: Checkpoints of the quick runs, and their bodies (neither a multiple of the other).
EVERY = 512 * 1024
SIZE = 6 * MIB + 12_345
REPO = "crash/app"


@dataclass
class Registry:
    """A ``moorage serve`` that can be killed and started again on the same data."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    running: RunningRegistry | None = None

    def start(self) -> RunningRegistry:
        self.running = start_moorage(
            self.workdir, workers=1, env=self.env, data=self.workdir / "data"
        )
        return self.running

    @property
    def address(self) -> str:
        assert self.running is not None
        return self.running.address

    def kill(self) -> None:
        assert self.running is not None
        self.running.process.kill()
        self.running.process.wait()

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()

    def logs(self) -> str:
        return "" if self.running is None else self.running.logs()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "registry", {"MOORAGE_UPLOADS_CHECKPOINT": str(EVERY)})
    yield server
    server.stop()


def upload_offset(reply: Reply, where: str) -> int:
    """The offset a session status reports, checked against its Range."""
    assert reply.status == 204, f"{where}: {reply.status} {reply.body!r}"
    offset = int(reply.header("Upload-Offset") or "-1")
    assert reply.header("Range") == f"0-{offset - 1}", f"{where}: Range {reply.header('Range')}"
    return offset


def session_offset(registry: Registry, location: str, where: str) -> int:
    return upload_offset(request(registry.address, "GET", location), where)


def wait_for_offset(registry: Registry, location: str, offset: int, where: str) -> None:
    """Until the running registry reports ``offset`` (a checkpoint it recorded)."""
    current = -1

    def reached() -> bool:
        nonlocal current
        current = session_offset(registry, location, where)
        assert current <= offset, f"{where}: the upload is at {current}, past {offset}"
        return current == offset

    wait_until(
        reached,
        lambda: f"{where}: the upload to reach {offset} (still at {current})",
        timeout=60,
    )


def wait_until_writing(registry: Registry, location: str, where: str) -> None:
    """Until a request holds the upload's lease (it is streaming into the upload): a chunk
    that cannot fit is refused either way, and the refusal says which."""

    def writing() -> bool:
        reply = request(
            registry.address, "PATCH", location, b"x", {"Content-Range": f"{10**15}-{10**15}"}
        )
        assert reply.status == 416, f"{where}: probe: {reply.status} {reply.body!r}"
        return b"another request is writing" in reply.body

    wait_until(writing, f"{where}: a request to write into the upload", timeout=60)


def start_session(registry: Registry) -> str:
    reply = request(registry.address, "POST", f"/v2/{REPO}/blobs/uploads/")
    assert reply.status == 202, reply.body
    return location_path(reply)


def send_then_kill(
    registry: Registry,
    head: str,
    data: bytes,
    kill_at: int,
    settled_at: int | None,
    location: str,
    where: str,
) -> None:
    """Send ``head`` and ``kill_at`` bytes of ``data`` on one connection; once a request
    streams into the upload, and the registry has recorded a checkpoint at ``settled_at`` (if
    given), SIGKILL it."""
    host, port = registry.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    try:
        sock.sendall(head.encode())
        view = memoryview(data)
        for start in range(0, kill_at, 256 * 1024):
            sock.sendall(view[start : min(kill_at, start + 256 * 1024)])
        wait_until_writing(registry, location, where)
        if settled_at is not None:
            wait_for_offset(registry, location, settled_at, where)
        registry.kill()
    finally:
        sock.close()


def head_of(method: str, target: str, address: str, length: int) -> str:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {address}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    )


def crash_and_resume(
    registry: Registry,
    mode: str,
    data: bytes,
    every: int,
    kill_at: int,
    settle: bool,
    where: str,
) -> int:
    """Kill the registry ``kill_at`` bytes into a ``mode`` upload ("put": the whole body in
    the PUT that completes it; "patch": a streamed PATCH), start it again, check the session,
    resume and complete the upload, read it back. The offset the upload resumed at."""
    registry.start()
    location = start_session(registry)
    digest = sha256(data)
    target = with_query(location, digest=digest) if mode == "put" else location
    head = head_of(mode.upper(), target, registry.address, len(data))
    boundary = kill_at // every * every
    settled_at = boundary if settle and boundary else None
    send_then_kill(registry, head, data, kill_at, settled_at, location, where)

    registry.start()
    offset = session_offset(registry, location, where)
    assert offset % every == 0 and offset <= kill_at, f"{where}: resumes at {offset}"
    if settled_at is not None:
        assert offset == settled_at, f"{where}: resumes at {offset}, not {settled_at}"
    # The dead worker's lease does not stand in the way: the resume goes through at once.
    reply = request(
        registry.address,
        "PATCH",
        location,
        data[offset:],
        {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{len(data) - 1}",
        },
    )
    assert reply.status == 202, f"{where}: resume: {reply.status} {reply.body!r}"
    assert reply.header("Upload-Offset") == str(len(data)), where
    reply = request(registry.address, "PUT", with_query(location, digest=digest))
    assert reply.status == 201, f"{where}: completion: {reply.status} {reply.body!r}"
    reply = request(registry.address, "GET", f"/v2/{REPO}/blobs/{digest}")
    assert reply.status == 200 and reply.body == data, f"{where}: the blob read back differs"
    logs = registry.logs()
    assert "took the lease over" in logs, f"{where}: {logs[-3000:]}"
    assert "Traceback" not in logs, f"{where}: {logs[-3000:]}"
    return offset


def kill_points(mode: str, count: int, every: int, size: int) -> list[tuple[int, bool]]:
    """(byte to kill at, whether to wait for its checkpoint first): random, reproducible."""
    rng = random.Random(f"{SEED}-{mode}-{every}-{size}")
    return [(rng.randrange(every, size), rng.random() < 0.7) for _ in range(count)]


@pytest.mark.parametrize("mode", ["put", "patch"])
@pytest.mark.parametrize("case", range(3))
def test_killed_mid_upload_resumes_at_a_checkpoint(
    registry: Registry, mode: str, case: int
) -> None:
    kill_at, settle = kill_points(mode, 3, EVERY, SIZE)[case]
    where = f"seed {SEED}, {mode}, killed at byte {kill_at}{' once recorded' if settle else ''}"
    data = random.Random(f"{SEED}-{mode}-{case}").randbytes(SIZE)
    crash_and_resume(registry, mode, data, EVERY, kill_at, settle, where)


@pytest.mark.parametrize("mode", ["put", "patch"])
def test_killed_before_the_first_checkpoint_resumes_from_zero(
    registry: Registry, mode: str
) -> None:
    rng = random.Random(f"{SEED}-{mode}-empty")
    kill_at = rng.randrange(1, EVERY)
    where = f"seed {SEED}, {mode}, killed at byte {kill_at}"
    data = rng.randbytes(SIZE)
    assert crash_and_resume(registry, mode, data, EVERY, kill_at, False, where) == 0


def test_killed_mid_200_mb_put_with_the_default_checkpoints(tmp_path: Path) -> None:
    """The default 64 MiB checkpoints (no setting), a 200 MB monolithic PUT."""
    size, every = 200_000_000, 64 * MIB
    rng = random.Random(f"{SEED}-200MB")
    kill_at = rng.randrange(every + 1, size)
    where = f"seed {SEED}, 200 MB put, killed at byte {kill_at} once recorded"
    data = rng.randbytes(size)
    registry = Registry(tmp_path / "registry")
    try:
        crash_and_resume(registry, "put", data, every, kill_at, True, where)
    finally:
        registry.stop()


@pytest.mark.parametrize("mode", ["put", "patch"])
def test_replica_on_s3_and_postgres_killed_mid_upload(
    tmp_path: Path, seaweedfs: SeaweedFS, postgres_server: PostgresServer, mode: str
) -> None:
    """A replica of the scale-out setup (bytes in S3 as checkpointed segments, sessions in
    PostgreSQL) killed and started again."""
    name = f"moorage_crash_{os.getpid()}_{mode}"
    dsn = postgres_server.create_database(name)
    env = {
        **replica_environment(seaweedfs, dsn),
        "MOORAGE_UPLOADS_CHECKPOINT": str(EVERY),
        "MOORAGE_STORAGE_S3_PREFIX": f"crash-{os.getpid()}-{mode}",
    }
    registry = Registry(tmp_path / "replica", env)
    kill_at, settle = kill_points(f"s3-{mode}", 1, EVERY, SIZE)[0]
    where = f"seed {SEED}, S3 {mode}, killed at byte {kill_at}{' once recorded' if settle else ''}"
    data = random.Random(f"{SEED}-s3-{mode}").randbytes(SIZE)
    try:
        crash_and_resume(registry, mode, data, EVERY, kill_at, settle, where)
    finally:
        registry.stop()
        postgres_server.drop_database(name)
