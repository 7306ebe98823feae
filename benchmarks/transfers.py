"""The timed blob transfers: random source files (``make_random_file``), a curl wrapper that
reports status, time and sizes, the monolithic upload (POST then PUT, both by curl), the
downloads (curl into /dev/null, and a Python client reading 256 KiB at a time), the untimed
sha256 check of a downloaded copy, and the chunked upload (POST, PATCHes, PUT on one
``http.client`` connection). ``measured`` times one of them with CPU accounting on a quiet
machine and returns a ``Sample``; sizes are counted in MiB (``MIB``, 2^20 bytes)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpu import CpuMeter, quiesce
from errors import BenchmarkError, tool_output
from registry_http import target_of, with_digest
from servers import Server

MIB = 1 << 20

CURL_FORMAT = (
    "%{http_code} %{time_total} %{size_upload} %{size_download}\\n"
    "%header{location}\\n%header{docker-content-digest}\\n"
)


@dataclass(frozen=True)
class BlobFile:
    path: Path
    size: int
    digest: str


def make_random_file(path: Path, size: int) -> BlobFile:
    """Write ``size`` random bytes to ``path``, fsync it (it stays in the page cache)."""
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(8 * MIB, remaining))
            hasher.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return BlobFile(path, size, "sha256:" + hasher.hexdigest())


@dataclass
class Sample:
    seconds: float
    cpu: dict[str, float]
    size: int

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


def measured(
    server: Server,
    size: int,
    action: Callable[[], float],
    wait_idle: float,
    pretouch: int = 0,
) -> Sample:
    """Run a timed ``action`` (returns its own duration), recording CPU on both sides."""
    server.check_alive()
    quiesce(wait_idle, pretouch)
    with CpuMeter(server.proc.pid) as cpu:
        seconds = action()
    server.check_alive()
    return Sample(seconds, cpu.percent, size)


@dataclass(frozen=True)
class CurlResult:
    status: int
    seconds: float
    uploaded: int
    downloaded: int
    location: str
    digest: str


def curl(args: list[str]) -> CurlResult:
    output = tool_output(
        ["curl", "-sS", "--http1.1", "-H", "Expect:", "-w", CURL_FORMAT, *args],
        f"curl {' '.join(args)} failed",
    )
    first, location, digest = [*output.splitlines(), "", ""][:3]
    status, seconds, uploaded, downloaded = first.split()
    return CurlResult(int(status), float(seconds), int(uploaded), int(downloaded), location, digest)


def monolithic_upload(server: Server, name: str, blob: BlobFile) -> float:
    """POST then PUT with the whole body, both by curl; the two requests' time_total."""
    start = curl(
        [
            "-X",
            "POST",
            "-H",
            "Content-Length: 0",
            "-o",
            "/dev/null",
            server.url(f"/v2/{name}/blobs/uploads/"),
        ]
    )
    if start.status != 202:
        raise BenchmarkError(f"{server.label}: POST upload answered {start.status}")
    target = with_digest(target_of(server, start.location), blob.digest)
    put = curl(
        [
            "-X",
            "PUT",
            "-T",
            str(blob.path),
            "-H",
            "Content-Type: application/octet-stream",
            "-o",
            "/dev/null",
            server.url(target),
        ]
    )
    if put.status != 201:
        raise BenchmarkError(f"{server.label}: monolithic PUT answered {put.status}")
    if put.uploaded != blob.size:
        raise BenchmarkError(f"{server.label}: curl sent {put.uploaded} of {blob.size} bytes")
    if put.digest and put.digest != blob.digest:
        raise BenchmarkError(f"{server.label}: stored as {put.digest}, sent {blob.digest}")
    return start.seconds + put.seconds


def _check_download(server: Server, blob: BlobFile, status: int, received: int) -> None:
    if status != 200 or received != blob.size:
        raise BenchmarkError(f"{server.label}: GET blob answered {status} with {received} bytes")


def download(server: Server, name: str, blob: BlobFile, *, follow: bool = False) -> float:
    """GET the blob by curl (following a redirect to the store with ``follow``)."""
    redirects = ["-L"] if follow else []
    result = curl([*redirects, "-o", "/dev/null", server.url(f"/v2/{name}/blobs/{blob.digest}")])
    _check_download(server, blob, result.status, result.downloaded)
    return result.seconds


def python_download(server: Server, name: str, blob: BlobFile) -> float:
    """GET the blob with http.client reading into a 256 KiB buffer: a second client, that
    makes fewer system calls than curl (16 KiB reads) while its buffer still fits in the CPU
    cache (4 MiB reads measured slower), to tell the client's limits from the server's."""
    conn = server.connection(timeout=300)
    buffer = memoryview(bytearray(256 * 1024))
    try:
        started = time.perf_counter()
        conn.request("GET", f"/v2/{name}/blobs/{blob.digest}")
        response = conn.getresponse()
        received = 0
        while count := response.readinto(buffer):
            received += count
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    _check_download(server, blob, response.status, received)
    return seconds


def verify_download(server: Server, name: str, blob: BlobFile) -> None:
    """Download the blob once more and compare its sha256 (not timed)."""
    url = server.url(f"/v2/{name}/blobs/{blob.digest}")
    hasher, received = hashlib.sha256(), 0
    with subprocess.Popen(["curl", "-sSf", url], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MIB):
            hasher.update(chunk)
            received += len(chunk)
    if proc.returncode != 0 or "sha256:" + hasher.hexdigest() != blob.digest:
        raise BenchmarkError(
            f"{server.label}: downloaded {received} bytes with sha256 {hasher.hexdigest()}, "
            f"expected {blob.size} bytes of {blob.digest} (curl exit {proc.returncode})"
        )


def chunked_upload(server: Server, name: str, blob: BlobFile, chunk_size: int) -> float:
    """POST, PATCH chunks with Content-Range, PUT ?digest= with no body; wall time."""
    conn = server.connection(timeout=300)
    buffer = bytearray(chunk_size)
    try:
        started = time.perf_counter()
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.request("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
        response = conn.getresponse()
        response.read()
        if response.status != 202:
            raise BenchmarkError(f"{server.label}: POST upload answered {response.status}")
        target = target_of(server, response.headers.get("Location"))
        offset = 0
        with blob.path.open("rb", buffering=0) as source:
            while count := source.readinto(buffer):
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(count),
                    "Content-Range": f"{offset}-{offset + count - 1}",
                }
                with memoryview(buffer)[:count] as body:
                    conn.request("PATCH", target, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                offset += count
                if response.status != 202 or response.headers.get("Range") != f"0-{offset - 1}":
                    raise BenchmarkError(
                        f"{server.label}: PATCH to {offset} answered {response.status}, "
                        f"Range {response.headers.get('Range')}"
                    )
                # Distribution's Location carries a state token that changes with every chunk.
                target = target_of(server, response.headers.get("Location"))
        conn.request("PUT", with_digest(target, blob.digest), headers={"Content-Length": "0"})
        response = conn.getresponse()
        response.read()
        seconds = time.perf_counter() - started
        if response.status != 201:
            raise BenchmarkError(f"{server.label}: final PUT answered {response.status}")
        return seconds
    finally:
        conn.close()
