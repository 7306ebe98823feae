"""Worker processes: uploads continue on any process, workers are replaced, shutdown is clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.http import location_path, request, with_query
from tests.support.images import sha256
from tests.support.server import RunningRegistry, start_moorage
from tests.support.waiting import wait_until


def chunked_upload(addresses: list[str], repo: str, data: bytes, chunk: int) -> str:
    """POST, then PATCH each chunk and PUT, cycling through ``addresses`` request by request."""
    turn = 0

    def next_address() -> str:
        nonlocal turn
        turn += 1
        return addresses[turn % len(addresses)]

    reply = request(next_address(), "POST", f"/v2/{repo}/blobs/uploads/")
    assert reply.status == 202, reply.body
    path = location_path(reply)
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        reply = request(
            next_address(),
            "PATCH",
            path,
            part,
            {
                "Content-Range": f"{start}-{start + len(part) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert reply.status == 202, reply.body
        assert reply.header("Range") == f"0-{start + len(part) - 1}"
        path = location_path(reply)
    digest = sha256(data)
    reply = request(next_address(), "PUT", with_query(path, digest=digest), b"")
    assert reply.status == 201, reply.body
    return digest


def test_chunks_on_different_processes(tmp_path: Path) -> None:
    """Two registry processes on one data directory: each chunk goes to the other one."""
    first = start_moorage(tmp_path / "a", workers=1)
    second = start_moorage(tmp_path / "b", workers=1, data=first.data)
    try:
        data = os.urandom(3 * 1024 * 1024 + 5)
        digest = chunked_upload([first.address, second.address], "multi/proc", data, 700_000)
        for registry in (first, second):
            reply = request(registry.address, "GET", f"/v2/multi/proc/blobs/{digest}")
            assert reply.status == 200
            assert reply.body == data
    finally:
        second.stop()
        first.stop()


def test_many_chunked_uploads_across_workers(fresh_moorage: RunningRegistry) -> None:
    for index in range(8):
        data = os.urandom(200_000 + index)
        digest = chunked_upload([fresh_moorage.address], f"workers/u{index}", data, 50_000)
        reply = request(fresh_moorage.address, "GET", f"/v2/workers/u{index}/blobs/{digest}")
        assert reply.body == data


def worker_pids(registry: RunningRegistry) -> set[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(registry.process.pid)], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in out.stdout.split()}


def test_dead_worker_is_replaced_and_shutdown_is_clean(fresh_moorage: RunningRegistry) -> None:
    pids = worker_pids(fresh_moorage)
    assert len(pids) == 2
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        current = worker_pids(fresh_moorage)
        return len(current) == 2 and victim not in current

    wait_until(
        replaced, lambda: f"the dead worker to be replaced (workers: {worker_pids(fresh_moorage)})"
    )
    for _ in range(6):
        assert request(fresh_moorage.address, "GET", "/v2/").status == 200
    fresh_moorage.process.send_signal(signal.SIGTERM)
    assert fresh_moorage.process.wait(timeout=15) == 0
    assert "Traceback" not in fresh_moorage.logs()


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (killed workers may wait to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_workers_stop_when_the_parent_is_killed(fresh_moorage: RunningRegistry) -> None:
    pids = worker_pids(fresh_moorage)
    assert len(pids) == 2
    fresh_moorage.process.kill()  # SIGKILL: the supervisor gets no chance to stop them
    fresh_moorage.process.wait()
    wait_until(
        lambda: not any(_running(pid) for pid in pids),
        lambda: f"the workers to stop ({[pid for pid in pids if _running(pid)]} still run)",
        timeout=15,
    )
    with pytest.raises(OSError):
        request(fresh_moorage.address, "GET", "/v2/")


def test_a_second_registry_cannot_share_the_port(
    fresh_moorage: RunningRegistry, tmp_path: Path
) -> None:
    """Worker sockets use SO_REUSEPORT; another registry must still be refused the port."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "serve",
            "--listen",
            fresh_moorage.address,
            "--data",
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "Address already in use" in result.stderr
