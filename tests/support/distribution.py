"""CNCF Distribution (Debian's ``docker-registry``) on loopback, over HTTPS with htpasswd auth:
another registry for the tests that resolve images held elsewhere."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.clients import Pki, write_htpasswd
from tests.support.programs import program
from tests.support.server import RunningRegistry, free_port, wait_ready

DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
  secret: moorage-test-{port}
  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: moorage-test
    path: {htpasswd}
"""


def start_distribution(workdir: Path, pki: Pki, users: Mapping[str, str]) -> RunningRegistry:
    """Distribution with its data in ``workdir``, serving ``pki``'s certificate, for ``users``
    (name: password); returns once it answers /v2/."""
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        DISTRIBUTION_CONFIG.format(
            root=workdir / "data",
            port=port,
            cert=pki.server_cert,
            key=pki.server_key,
            htpasswd=write_htpasswd(workdir / "htpasswd", users),
        )
    )
    log = workdir / "distribution.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [program("docker-registry"), "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    registry = RunningRegistry(
        "127.0.0.1", port, workdir / "data", process, log, "https", pki.ca_cert
    )
    try:
        wait_ready(registry.url, process, log, pki.ca_cert)
    except BaseException:
        registry.stop()
        raise
    return registry


def docker_config(path: Path, auths: dict[str, Any]) -> Path:
    """A Docker config file (``config.json``) holding ``auths``: registry to entry."""
    path.write_text(json.dumps({"auths": auths}))
    return path


def basic_entry(user: str, password: str) -> dict[str, str]:
    """A Docker config ``auths`` entry with a user and password, as ``docker login`` writes."""
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
