"""Starting and stopping the registries under test: moorage (its ``serve`` command; with its
metrics off for ``METRICS_OFF``) and CNCF Distribution (``docker-registry`` with a config
of its own, never the system service), each on a free port of 127.0.0.1 with filesystem storage
in the work directory, in a session of its own so that stopping it also stops any worker it left
behind. ``Server`` is a running one: its URLs, its log, whether it is still alive."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errors import BenchmarkError

REGISTRIES = ("moorage", "distribution")
#: Two more moorage servers for the metrics cost: ``[metrics]`` enabled (the default) and not.
METRICS_ON, METRICS_OFF = "moorage-metrics-on", "moorage-metrics-off"
LABELS = {
    "moorage": "moorage",
    "distribution": "Distribution",
    METRICS_ON: "metrics on",
    METRICS_OFF: "metrics off",
}

DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: moorage-benchmark-secret
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    key: str
    port: int
    data: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def label(self) -> str:
        return LABELS.get(self.key, self.key)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def answers_v2(self) -> bool:
        """Whether the server answers ``GET /v2/`` with 200 (it is ready)."""
        conn = self.connection(timeout=2)
        try:
            conn.request("GET", "/v2/")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        finally:
            conn.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchmarkError(
                f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The server runs in its own session: its process group id is its pid.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Workers left behind by a crashed supervisor share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own (so that ``Server.stop`` ends its whole group),
    its output going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def wait_ready(server: Server, ready: Callable[[], bool], failure: str) -> None:
    """Poll ``ready`` until it says yes; stop the server and raise ``failure`` (with the log's
    tail) if it exits or 30 s pass first."""
    deadline = time.monotonic() + 30
    while True:
        server.check_alive()
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise BenchmarkError(f"{failure}:\n{server.log_tail()}")
        time.sleep(0.1)


def start_server(
    key: str,
    work: Path,
    moorage_bin: Path,
    distribution_bin: str,
    *,
    instance: str = "",
    variables: dict[str, str] | None = None,
) -> Server:
    """Start registry ``key`` with its data and log in ``work`` (named with ``instance`` when
    one key is started more than once), moorage with ``variables`` added to its environment."""
    port = free_port()
    data = work / f"{key}{instance}-data"
    data.mkdir()
    log = work / f"{key}{instance}.log"
    env = None
    if key in ("moorage", METRICS_ON, METRICS_OFF):
        argv = [str(moorage_bin), "serve", "--listen", f"127.0.0.1:{port}", "--data", str(data)]
        enabled = "false" if key == METRICS_OFF else "true"
        env = {**os.environ, **(variables or {}), "MOORAGE_METRICS_ENABLED": enabled}
    else:
        config = work / "distribution.yml"
        config.write_text(DISTRIBUTION_CONFIG.format(root=data, port=port))
        argv = [distribution_bin, "serve", str(config)]
    server = Server(key, port, data, log, spawn(argv, log, env))
    wait_ready(server, server.answers_v2, f"{server.label} did not answer /v2/")
    return server
