"""How a benchmark fails: ``BenchmarkError`` says that a registry misbehaved or a tool failed,
so the run stops instead of reporting numbers that cannot be trusted; ``tool_output`` runs a
command and raises it when the command fails; ``exit_status`` runs an entry point's body and
turns its end into the process's exit status (0 done, 1 failed, 130 interrupted by Ctrl-C or
SIGTERM, which unwinds the same way so that ``finally`` blocks stop servers and delete files);
``missing_tools`` says which programs a benchmark needs are absent, and how to install them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: The Debian package of each program the benchmarks start (scripts/install-clients.sh
#: installs them all).
PACKAGES = {
    "curl": "curl",
    "wrk": "wrk",
    "ab": "apache2-utils",
    "docker-registry": "docker-registry",
}


def missing_tools(tools: Sequence[str]) -> list[str]:
    """One line per program of ``tools`` (names or paths) that is not installed, naming its
    package and the install command; empty when all are there."""
    missing = []
    for tool in tools:
        if shutil.which(tool) is None:
            package = PACKAGES.get(Path(tool).name)
            how = (
                f"(Debian package {package}): run scripts/install-clients.sh as root, "
                f"or apt-get install {package}"
                if package
                else "(make serve creates the virtual environment)"
            )
            missing.append(f"error: {tool} is not installed {how}")
    return missing


def check_tools(tools: Sequence[str]) -> int:
    """0 when every program of ``tools`` is installed; else print what is missing, 2."""
    missing = missing_tools(tools)
    for line in missing:
        print(line, file=sys.stderr)
    return 2 if missing else 0


class BenchmarkError(Exception):
    """A registry misbehaved or a tool failed; the run's numbers cannot be trusted."""


def tool_output(
    argv: Sequence[str],
    failure: str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """The standard output of ``argv`` run to its end; if it exits non-zero, raise
    ``BenchmarkError`` with ``failure`` and what it wrote to standard error."""
    proc = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchmarkError(f"{failure}: {proc.stderr.strip()}")
    return proc.stdout


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def exit_status(body: Callable[[], None]) -> int:
    """Run ``body``: 0 when it ends, 1 (saying why) on ``BenchmarkError``, 130 when it is
    interrupted; SIGTERM is made to unwind like Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        body()
    except BenchmarkError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0
