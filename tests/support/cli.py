"""Running the ``moorage`` command as a process, as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.support.server import RunningRegistry
from tests.support.waiting import wait_until


def moorage_cli(
    *args: str, env: dict[str, str] | None = None, status: int = 0
) -> subprocess.CompletedProcess[str]:
    """``python -m moorage ARGS`` with no MOORAGE_* from the environment but ``env``'s;
    checks its exit status."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "moorage", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, (
        f"moorage {' '.join(args)} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result


def pins(registry: RunningRegistry, expected: int, *args: str) -> list[dict[str, Any]]:
    """``moorage pins --json ARGS`` against ``registry``, once ``expected`` pins are recorded
    (the webhook records them in the background, after answering); exactly that many."""
    env = {"MOORAGE_REGISTRY": registry.url}
    ca = ["--ca-file", str(registry.ca_file)] if registry.ca_file else []
    found: list[dict[str, Any]] = []

    def recorded() -> bool:
        nonlocal found
        found = json.loads(moorage_cli("pins", "--json", *ca, *args, env=env).stdout)["pins"]
        return len(found) >= expected

    wait_until(recorded, lambda: f"{expected} pin(s) to be recorded (found {found})")
    assert len(found) == expected, found
    return found
