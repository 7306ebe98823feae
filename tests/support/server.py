"""Start real ``moorage serve`` processes for tests (and CNCF Distribution beside them)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waiting import wait_until


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str
    port: int
    data: Path
    process: subprocess.Popen[bytes]
    log: Path
    scheme: str = "http"
    ca_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """host:port, as clients write it in image references."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, ca_file: Path | None = None
) -> None:
    """Until the registry at ``url`` answers /v2/ (401 counts: it asks for credentials)."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"registry exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/v2/", timeout=2, context=context):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    wait_until(answers, lambda: f"the registry at {url} to answer:\n{log.read_text()}", timeout=20)


def start_moorage(
    workdir: Path,
    *,
    workers: int = 2,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    tls: tuple[Path, Path, Path] | None = None,
    host: str = "127.0.0.1",
    data: Path | None = None,
    port: int | None = None,
) -> RunningRegistry:
    """Run ``moorage serve`` on a free port with its data in ``workdir/data``, and its
    temporary files (its metrics directory) in ``workdir/tmp``.

    ``tls`` is (certificate, key, CA certificate) to serve HTTPS; ``data`` shares another
    registry's data directory; ``port`` starts it on a port of the caller's choosing (a
    replica restarted behind a load balancer).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    port = port or free_port()
    data = data or workdir / "data"
    log = workdir / "moorage.log"
    command = [
        sys.executable,
        "-m",
        "moorage",
        "serve",
        "--listen",
        f"{host}:{port}",
        "--data",
        str(data),
        "--workers",
        str(workers),
        *args,
    ]
    scheme, ca_file = "http", None
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        scheme, ca_file = "https", tls[2]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(workdir / "tmp"), **(env or {})},
        )
    registry = RunningRegistry(host, port, data, process, log, scheme, ca_file)
    try:
        wait_ready(registry.url, process, log, ca_file)
    except BaseException:
        registry.stop()
        raise
    return registry
