"""Real-client traffic must not leave unhandled exceptions in the registry's log.

Clients hide some server errors: Go's HTTP client silently retries a request whose reused
keep-alive connection was dropped, and oras-py retries after sleeping. The registry log shows
them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clients import Clients
from tests.support.images import check_layout_image, new_image, open_layout
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients


def test_push_and_pull_log_no_errors(
    clients: Clients, fresh_moorage: RunningRegistry, tmp_path: Path
) -> None:
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(100_000, 100_000))
    target = f"docker://{fresh_moorage.address}/clients/log:v1"
    clients.skopeo("copy", "--dest-tls-verify=false", layout.ref("v1"), target)
    out = open_layout(tmp_path / "out")
    clients.skopeo("copy", "--src-tls-verify=false", target, out.ref("v1"))
    check_layout_image(out, image.digest)
    logs = fresh_moorage.logs()
    assert "Traceback" not in logs and "Unhandled exception" not in logs, logs[-4000:]
