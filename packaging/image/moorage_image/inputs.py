"""What the image is built from: the project's version, dependencies, date and revision.

The image's date (``SOURCE_DATE_EPOCH``: every file's mtime is clamped to it, and it is the
config's ``created``) comes from, in order:

1. the ``SOURCE_DATE_EPOCH`` environment variable;
2. the commit time of ``HEAD`` (``git log -1 --format=%ct``);
3. outside a git checkout, the newest modification time of the files the image is built from
   (``pyproject.toml``, ``constraints.txt``, ``README.md``, ``moorage/``), which an unpacked
   source archive keeps.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The files and directories of the project that go into the image (with packaging/image).
SOURCE_PATHS = ("pyproject.toml", "README.md", "moorage")
INPUT_PATHS = (*SOURCE_PATHS, "constraints.txt", "packaging/image")


@dataclass(frozen=True, slots=True)
class Project:
    root: Path
    name: str
    version: str
    description: str
    license: str | None
    #: The runtime requirements of pyproject.toml, as written there (pinned).
    dependencies: tuple[str, ...]
    epoch: int
    #: Where ``epoch`` came from, for the build's log.
    epoch_source: str
    #: The commit, with ``-dirty`` when the inputs differ from it; None outside git.
    revision: str | None
    source_url: str | None

    def source_files(self) -> list[Path]:
        """The files the moorage wheel is built from, relative to ``root``."""
        listed = _git(self.root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        if listed is not None:
            names = [name for name in listed.split("\0") if name]
            chosen = [
                Path(name)
                for name in names
                if any(name == top or name.startswith(f"{top}/") for top in SOURCE_PATHS)
            ]
        else:
            chosen = [
                path.relative_to(self.root)
                for top in SOURCE_PATHS
                for path in ((self.root / top).rglob("*") if (self.root / top).is_dir() else [])
            ] + [Path(top) for top in SOURCE_PATHS if (self.root / top).is_file()]
        return sorted(
            path
            for path in chosen
            if (self.root / path).is_file()
            and "__pycache__" not in path.parts
            and path.suffix != ".pyc"
        )


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return None
    return result.stdout if result.returncode == 0 else None


def _source_url(root: Path, urls: Mapping[str, str]) -> str | None:
    for key in ("Source", "Repository", "source", "repository", "Homepage", "homepage"):
        if key in urls:
            return urls[key]
    remote = _git(root, "remote", "get-url", "origin")
    if not remote:
        return None
    remote = remote.strip()
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", remote)  # git@host:owner/repo.git
    if scp is not None:
        remote = f"https://{scp.group(1)}/{scp.group(2)}"
    return remote.removesuffix(".git")


def _epoch(root: Path, environ: Mapping[str, str]) -> tuple[int, str]:
    given = environ.get("SOURCE_DATE_EPOCH")
    if given:
        if not given.isdigit():
            raise SystemExit(f"SOURCE_DATE_EPOCH must be a number of seconds, not {given!r}")
        return int(given), "SOURCE_DATE_EPOCH"
    committed = _git(root, "log", "-1", "--format=%ct")
    if committed and committed.strip().isdigit():
        return int(committed.strip()), "the commit time of HEAD"
    newest = 0
    for top in (*SOURCE_PATHS, "constraints.txt"):
        path = root / top
        for candidate in path.rglob("*") if path.is_dir() else [path]:
            if candidate.is_file() and "__pycache__" not in candidate.parts:
                newest = max(newest, int(candidate.stat().st_mtime))
    return newest, "the newest source file"


def read_project(root: Path, environ: Mapping[str, str] = os.environ) -> Project:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    license_field = project.get("license")
    license_text = license_field.get("text") if isinstance(license_field, dict) else license_field
    epoch, epoch_source = _epoch(root, environ)
    revision = _git(root, "rev-parse", "HEAD")
    if revision is not None:
        revision = revision.strip()
        changed = _git(root, "status", "--porcelain", "--", *INPUT_PATHS)
        if changed:
            revision += "-dirty"
    return Project(
        root=root,
        name=project["name"],
        version=project["version"],
        description=project.get("description", ""),
        license=license_text,
        dependencies=tuple(project.get("dependencies", ())),
        epoch=epoch,
        epoch_source=epoch_source,
        revision=revision,
        source_url=_source_url(root, project.get("urls", {})),
    )
