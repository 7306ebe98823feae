"""Run HAProxy (Debian's package) as a round-robin front door for registry replicas."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.programs import program
from tests.support.server import stop_process
from tests.support.waiting import wait_until

_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
    # A blob upload or download of several GiB is one long request.
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout http-request 30s
    # A replica that refuses the connection (it died): try another one.
    retries 3
    option redispatch 1

frontend registry
    bind {host}:{port}
    default_backend replicas

backend replicas
    # Every request, not every connection, goes to the next replica: a chunked upload's
    # PATCH requests on one keep-alive connection land on different replicas.
    balance roundrobin
    http-reuse never
    option httpchk GET /v2/
    http-check expect rstatus ^(200|401)$
{servers}
"""


@dataclass
class HAProxy:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


def start_haproxy(
    workdir: Path, host: str, port: int, backends: list[str], *, check_interval_ms: int = 300
) -> HAProxy:
    """HAProxy on host:port balancing over ``backends`` (HOST:PORT each), health-checked."""
    workdir.mkdir(parents=True, exist_ok=True)
    servers = "\n".join(
        f"    server replica{index} {backend} check inter {check_interval_ms} fall 1 rise 1"
        for index, backend in enumerate(backends, 1)
    )
    config = workdir / "haproxy.cfg"
    config.write_text(_CONFIG.format(host=host, port=port, servers=servers))
    log = workdir / "haproxy.log"
    binary = program("haproxy")
    check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True)
    if check.returncode != 0:
        raise RuntimeError(f"invalid haproxy config:\n{check.stderr.decode(errors='replace')}")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    proxy = HAProxy(host, port, process, log)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{proxy.address}/v2/", timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    try:
        wait_until(
            answers, lambda: f"haproxy on {proxy.address} to answer:\n{log.read_text()}", timeout=15
        )
    except BaseException:
        proxy.stop()
        raise
    return proxy
