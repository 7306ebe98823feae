"""The code each registry of the tag policy benchmark runs. The baseline is the parent of the
commit "Tag policies and tag history in the metadata store" (``baseline_revision``), checked
out in a temporary detached git worktree for the run (``checked_out``); every registry, the
baseline and the current code alike, is started by a launcher script (``write_launcher``)
that runs the venv's python on the package found in its code directory, from an empty
directory, and ``moorage_location`` checks beforehand that ``import moorage`` resolves there."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from checkout import ROOT, VENV_BIN, git
from errors import BenchmarkError, tool_output

PYTHON = VENV_BIN / "python"
#: The commit that introduced tag policies; its parent is the baseline.
POLICY_COMMIT_SUBJECT = "Tag policies and tag history in the metadata store"
#: Our settings of this prefix are not passed on to a registry under test.
SETTINGS_PREFIX = "MOORAGE_"


def baseline_revision() -> tuple[str, str]:
    """(the commit that introduced tag policies, its parent: the baseline)."""
    introduced = [
        line.split(" ", 1)[0]
        for line in git("log", "--format=%H %s").splitlines()
        if line.split(" ", 1)[1:] and line.split(" ", 1)[1].startswith(POLICY_COMMIT_SUBJECT)
    ]
    if not introduced:
        raise BenchmarkError(f"no commit whose message starts {POLICY_COMMIT_SUBJECT!r}")
    commit = introduced[-1]  # the oldest, should there be several
    return commit, git("rev-parse", f"{commit}^")


@contextlib.contextmanager
def checked_out(revision: str, path: Path) -> Iterator[Path]:
    """``revision`` in a detached worktree at ``path`` for the block; the worktree is removed
    afterwards, also when adding it failed halfway."""
    try:
        git("worktree", "add", "--quiet", "--detach", str(path), revision)
        yield path
    finally:
        if path.exists():
            removed = subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                capture_output=True,
                check=False,
            )
            if removed.returncode != 0:
                shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(BenchmarkError):
            git("worktree", "prune")


def write_launcher(path: Path, code: Path, cwd: Path, workers: int) -> Path:
    """A ``moorage`` executable for ``start_server``: the venv's python running the package
    found in ``code`` with ``workers`` workers. It starts in ``cwd``, an empty directory,
    because ``python -m`` puts the working directory first on sys.path (run from the
    repository root, the baseline would import the current code)."""
    unset = "".join(
        f"unset {shlex.quote(k)}\n" for k in os.environ if k.startswith(SETTINGS_PREFIX)
    )
    path.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(cwd))} || exit 1\n"
        f"{unset}"
        f"PYTHONPATH={shlex.quote(str(code))}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(str(PYTHON))} -m moorage "$@" --workers {workers}\n'
    )
    path.chmod(0o755)
    return path


def moorage_location(code: Path, cwd: Path, label: str) -> Path:
    """Where ``import moorage`` resolves in a registry's environment (ours without MOORAGE_*
    settings, ``code`` on the module path) and directory; it must be inside ``code``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}
    env["PYTHONPATH"] = str(code)
    output = tool_output(
        [str(PYTHON), "-c", "import moorage; print(moorage.__file__)"],
        f"cannot import moorage from {code}",
        env=env,
        cwd=cwd,
    )
    location = Path(output.strip()).resolve()
    if not location.is_relative_to(code.resolve()):
        raise BenchmarkError(f"{label} imports moorage from {location}")
    return location
