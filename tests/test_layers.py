"""The layers of docs/ARCHITECTURE.md: which packages of moorage may import which.

The import rules are import-linter contracts (``[tool.importlinter]`` in pyproject.toml),
checked by ``make lint``. This module adds what imports cannot show: handlers and webhooks
reach data only through the registry, never through the store or the driver it is built on
(``registry.meta``, ``registry.storage``), and checks that the contracts themselves hold.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import moorage

ROOT = Path(moorage.__file__).parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_the_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT.parent / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "api").rglob("*.py"), *(ROOT / "admission").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_handlers_and_webhooks_reach_data_only_through_the_registry(path: Path) -> None:
    tree = ast.parse(path.read_text())
    reached = sorted(
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("meta", "storage")
    )
    assert reached == []
