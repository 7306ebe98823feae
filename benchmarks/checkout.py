"""This checkout of moorage, the code the benchmarks measure: ``ROOT`` (the repository),
``VENV_BIN`` (its virtual environment's executables, made by ``make serve``), ``git`` to run
git in it and ``describe`` to name its revision in the JSON output."""

from __future__ import annotations

import subprocess
from pathlib import Path

from errors import tool_output

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def git(*argv: str) -> str:
    """The output of ``git argv`` in the repository, stripped; BenchmarkError if it fails."""
    return tool_output(["git", "-C", str(ROOT), *argv], f"git {' '.join(argv)} failed").strip()


def describe() -> str:
    """``git describe --always --dirty``; empty if git cannot say (it is only recorded)."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
