"""The official OCI distribution-spec conformance suites, run against ``moorage serve``.

Two registries: the embedded default (filesystem and SQLite), and the scale-out topology's
front door (three replicas on SeaweedFS and PostgreSQL behind HAProxy, shared with the
scale-out client tests). Against each, three runs of ``../shared/tools/oci-conformance/run``:

- the released v1.1.1 suite, all four categories (pull, push, content discovery, content
  management);
- the newest suite with its defaults;
- the newest suite with ``--strict``: also the optional checks (upload cancel, digest headers,
  tag parameters on a push by digest).

Each must end with 0 failed, having passed at least as many checks as measured here, so a
suite that silently runs nothing fails too. Each run keeps to repositories of its own, so the
runs against one registry cannot see each other's content.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.programs import outside_tool
from tests.support.server import RunningRegistry, start_moorage
from tests.support.topology import Topology

pytestmark = pytest.mark.clients

#: The last line ``run`` prints.
_SUMMARY = re.compile(
    r"^conformance (?P<suite>\S+): (?P<passed>\d+) passed, (?P<failed>\d+) failed, "
    r"(?P<skipped>\d+) skipped"
)
#: A whole suite takes seconds; this only stops a hung one.
_TIMEOUT = 900


@dataclass(frozen=True)
class Suite:
    id: str
    args: tuple[str, ...]
    #: Checks passed on this code, against both registries (the suites are fixed builds).
    floor: int
    #: The repository names the suite uses (NAME=VALUE settings for ``run``).
    names: tuple[str, ...]


SUITES = [
    # 79 specs, 4 of which this configuration skips (a pull-only setup step, the cross-mount
    # checks for registries without automatic mounting, a "no push" discovery setup).
    Suite(
        "v1.1.1",
        (),
        75,
        (
            "OCI_NAMESPACE=conformance/v111/one",
            "OCI_CROSSMOUNT_NAMESPACE=conformance/v111/two",
        ),
    ),
    # Upload cancel is optional, and not checked without --strict (2 skipped).
    Suite(
        "head",
        ("--suite", "head"),
        693,
        ("OCI_REPO1=conformance/head/one", "OCI_REPO2=conformance/head/two"),
    ),
    Suite(
        "head-strict",
        ("--suite", "head", "--strict"),
        793,
        ("OCI_REPO1=conformance/strict/one", "OCI_REPO2=conformance/strict/two"),
    ),
]


@pytest.fixture(scope="module")
def run_tool() -> Path:
    """``../shared/tools/oci-conformance/run``; skips (fails under CI=true) when absent."""
    return outside_tool("oci-conformance/run")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, run_tool: Path) -> Iterator[RunningRegistry]:
    """One `moorage serve` with the embedded defaults for every run of the module."""
    registry = start_moorage(tmp_path_factory.mktemp("conformance-embedded"))
    yield registry
    registry.stop()


@dataclass(frozen=True)
class Target:
    """A registry the suites run against, and the logs that tell what it did."""

    registry: RunningRegistry
    logs: tuple[Path, ...]


@pytest.fixture(scope="module", params=["embedded", "scale-out"])
def target(request: pytest.FixtureRequest, run_tool: Path) -> Target:
    if request.param == "embedded":
        registry: RunningRegistry = request.getfixturevalue("embedded")
        return Target(registry, (registry.log,))
    topology: Topology = request.getfixturevalue("topology")
    front = topology.registry
    return Target(front, (front.log, *(replica.log for replica in topology.replicas)))


@pytest.mark.parametrize("suite", SUITES, ids=[s.id for s in SUITES])
def test_conformance(run_tool: Path, target: Target, suite: Suite, tmp_path: Path) -> None:
    out = tmp_path / "oci"
    result = subprocess.run(
        [str(run_tool), *suite.args, target.registry.address, *suite.names],
        env={**os.environ, "OCI_OUT": str(out)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
    )
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    summary = _SUMMARY.match(last)
    # Everything else ``run`` printed: the failing checks (or why the suite did not finish).
    checks = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and line != last
    ]
    report = "\n".join(
        [
            f"conformance {suite.id} against {target.registry.url} (exit {result.returncode})",
            *checks[:80],
            *([f"... and {len(checks) - 80} more lines"] if len(checks) > 80 else []),
            last,
            f"suite log: {out / 'log'}",
            *(f"registry log: {log}" for log in target.logs),
        ]
    )
    assert summary is not None, f"no summary line\n{report}"
    print(summary.group(0))  # shown with -rP: what ran, passed and was skipped
    passed, failed = int(summary["passed"]), int(summary["failed"])
    assert failed == 0, f"{failed} check(s) failed\n{report}"
    assert result.returncode == 0, report
    assert passed >= suite.floor, f"only {passed} checks passed, expected {suite.floor}\n{report}"
