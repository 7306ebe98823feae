"""tests/support/programs.py: missing programs are explained, outside checkers skip or fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import programs
from tests.support.programs import MissingProgram, Program, outside_tool, program

INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-clients.sh"


def test_a_missing_program_names_its_package_and_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(programs.PROGRAMS, "frobnicate", Program("frobnicate", "frob-utils"))
    with pytest.raises(MissingProgram) as caught:
        program("frobnicate")
    message = str(caught.value)
    assert "frobnicate is not installed (package frob-utils)" in message
    assert "scripts/install-clients.sh" in message
    assert "apt-get install frob-utils" in message


def test_a_program_is_found_in_its_fixed_location_before_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "sbin" / "frobnicate"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(
        programs.PROGRAMS, "frobnicate", Program("frobnicate", "frob", paths=(str(binary),))
    )
    assert program("frobnicate") == str(binary)


def test_an_unknown_program_is_a_mistake_in_the_test() -> None:
    with pytest.raises(KeyError, match="add it to PROGRAMS"):
        program("no-such-program-anywhere")


def test_every_apt_package_named_is_installed_by_the_install_script() -> None:
    script = INSTALL_SCRIPT.read_text()
    listed = re.search(r"APT_PACKAGES=\(([^)]*)\)", script)
    assert listed is not None
    packages = set(listed.group(1).split())
    for known in programs.PROGRAMS.values():
        if known.install is None:
            assert known.package in packages, f"{known.name}: {known.package} is not installed"


def test_an_absent_outside_tool_skips_outside_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "SHARED_TOOLS", tmp_path)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        outside_tool("oci-conformance/run")


def test_an_absent_outside_tool_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "SHARED_TOOLS", tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true it must run"):
        outside_tool("oci-conformance/run")


def test_a_present_outside_tool_is_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "up").write_text("#!/bin/sh\n")
    monkeypatch.setattr(programs, "SHARED_TOOLS", tmp_path)
    assert outside_tool("kube/up") == tmp_path / "kube" / "up"
