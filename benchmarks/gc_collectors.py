"""The two registries of the garbage collection benchmark and their collectors.

moorage runs ``moorage serve`` with a config file of its own (``moorage_config``: 2 workers,
filesystem + SQLite in the work directory, ``[gc]`` settings under which everything
unreferenced is collectible), and is collected online by ``moorage gc --json``
(``moorage_gc``). Distribution is started as ``servers.py`` does, and collected offline by
``docker-registry garbage-collect --delete-untagged`` (``distribution_gc``). Both collectors
are timed as subprocesses, with the CPU they used (``Timed``). ``stored_blobs`` lists the blob
files each keeps in its storage directory, to see what a collection deleted."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errors import BenchmarkError
from servers import Server, free_port, spawn, wait_ready

#: Our own settings of this prefix are not passed on to moorage.
SETTINGS_PREFIX = "MOORAGE_"

MOORAGE_CONFIG = """\
listen = "127.0.0.1:{port}"
data = "{data}"
workers = {workers}

[gc]
grace = {grace}
untagged_after = 0
keep_untagged = false
pins_window = 0
history_window = 0
interval = 0
inventory_max_age = 0
"""


def clean_environment() -> dict[str, str]:
    """Ours without MOORAGE_* settings, which would override the config file."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}


@dataclass
class Timed:
    """A collector's run: wall seconds, CPU seconds (user + system), exit status, output."""

    seconds: float
    cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run ``argv`` to its end. Its CPU is what this process's reaped children used meanwhile:
    nothing else is reaped while it runs (the servers are reaped only when stopped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(seconds, cpu, proc.returncode, proc.stdout, proc.stderr)


# moorage


def moorage_config(work: Path, workers: int, grace: float) -> tuple[Path, int, Path]:
    """Write the config file; (its path, the port, the data directory)."""
    port = free_port()
    data = work / "moorage-data"
    data.mkdir()
    config = work / "moorage.toml"
    config.write_text(MOORAGE_CONFIG.format(port=port, data=data, workers=workers, grace=grace))
    return config, port, data


def start_moorage(moorage: Path, work: Path, workers: int, grace: float) -> tuple[Server, Path]:
    """``moorage serve --config``; (the server, its config file)."""
    config, port, data = moorage_config(work, workers, grace)
    log = work / "moorage.log"
    argv = [str(moorage), "serve", "--config", str(config)]
    server = Server("moorage", port, data, log, spawn(argv, log, clean_environment()))
    wait_ready(server, server.answers_v2, "moorage did not answer /v2/")
    return server, config


@dataclass
class MoorageRun:
    """One ``moorage gc --json`` run: how long it took (and its own count of seconds), the
    CPU it used, and the report it printed."""

    timed: Timed
    report: dict[str, Any]

    def summary(self, garbage: set[str]) -> dict[str, Any]:
        report = self.report

        def total(key: str) -> dict[str, int]:
            items = report.get(key) or []
            return {"count": len(items), "bytes": sum(int(d["size"]) for d in items)}

        deleted = report.get("deleted") or []
        repositories = report.get("repositories") or []
        storage = report.get("storage") or {}
        return {
            "seconds": self.timed.seconds,
            "reported_seconds": report.get("seconds"),
            "cpu_seconds": self.timed.cpu_seconds,
            "manifests_deleted": report.get("manifests_deleted"),
            "links_deleted": report.get("links_deleted"),
            "bytes_freed": report.get("bytes_freed"),
            "retired": total("retired"),
            "orphaned": total("orphaned"),
            "deleted": total("deleted"),
            "waiting": total("waiting"),
            "upload_data": total("upload_data"),
            "storage": {"items": storage.get("items", 0), "bytes": storage.get("bytes", 0)},
            "garbage_deleted": {
                "count": sum(1 for d in deleted if d["digest"] in garbage),
                "bytes": sum(int(d["size"]) for d in deleted if d["digest"] in garbage),
            },
            "other_deleted": [d["digest"] for d in deleted if d["digest"] not in garbage][:20],
            "kept_manifests": sum(len(r.get("kept_manifests") or []) for r in repositories),
            "kept_blob_links": sum(len(r.get("kept_blobs") or []) for r in repositories),
            "stderr": self.timed.stderr.strip()[-2000:],
        }


def moorage_gc(moorage: Path, config: Path, keep: Path) -> MoorageRun:
    """``moorage gc --config <config> --json``, its whole output kept in the file ``keep``;
    BenchmarkError if it fails or prints no report."""
    argv = [str(moorage), "gc", "--config", str(config), "--json", "--quiet"]
    timed = run_timed(argv, clean_environment())
    keep.write_text(timed.stdout + ("\n--- stderr\n" + timed.stderr if timed.stderr else ""))
    if timed.returncode != 0:
        raise BenchmarkError(
            f"moorage gc exited with {timed.returncode}: "
            f"{(timed.stderr or timed.stdout).strip()[-3000:]}"
        )
    try:
        report = json.loads(timed.stdout)
    except ValueError as exc:
        raise BenchmarkError(f"moorage gc printed no JSON report ({exc}): {keep}") from None
    if not isinstance(report, dict):
        raise BenchmarkError(f"moorage gc printed {type(report).__name__}, not a report")
    return MoorageRun(timed, report)


# Distribution

DISTRIBUTION_SUMMARY = re.compile(
    r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion"
)


def restart_distribution(server: Server, work: Path, distribution: str) -> Server:
    """Start Distribution again on the config ``servers.start_server`` wrote, same port."""
    config = work / "distribution.yml"
    log = work / "distribution-after-gc.log"
    argv = [distribution, "serve", str(config)]
    again = Server(server.key, server.port, server.data, log, spawn(argv, log))
    wait_ready(again, again.answers_v2, "Distribution did not answer /v2/ after collection")
    return again


@dataclass
class DistributionRun:
    timed: Timed
    marked: int | None
    eligible_blobs: int | None
    eligible_manifests: int | None


def distribution_gc(distribution: str, work: Path) -> DistributionRun:
    """``docker-registry garbage-collect --delete-untagged`` on the stopped registry's config;
    its output kept in the work directory."""
    config = work / "distribution.yml"
    timed = run_timed([distribution, "garbage-collect", "--delete-untagged", str(config)])
    output = timed.stdout + timed.stderr
    (work / "distribution-gc.log").write_text(output)
    if timed.returncode != 0:
        raise BenchmarkError(
            f"docker-registry garbage-collect exited with {timed.returncode}: "
            f"{output.strip()[-3000:]}"
        )
    found = DISTRIBUTION_SUMMARY.search(output)
    if found is None:
        return DistributionRun(timed, None, None, None)
    marked, blobs, manifests = (int(n) for n in found.groups())
    return DistributionRun(timed, marked, blobs, manifests)


# Storage


def stored_blobs(key: str, data: Path) -> dict[str, int]:
    """The blobs in a registry's storage directory: {hex digest: size}. moorage keeps
    ``storage/blobs/sha256/<xx>/<hex>``, Distribution
    ``docker/registry/v2/blobs/sha256/<xx>/<hex>/data``."""
    if key == "moorage":
        root = data / "storage" / "blobs" / "sha256"
    else:
        root = data / "docker" / "registry" / "v2" / "blobs" / "sha256"
    found: dict[str, int] = {}
    if not root.is_dir():
        return found
    for prefix in os.scandir(root):
        if not prefix.is_dir():
            continue
        for entry in os.scandir(prefix.path):
            path = entry.path if key == "moorage" else os.path.join(entry.path, "data")
            try:
                found[entry.name] = os.stat(path).st_size
            except FileNotFoundError:
                continue
    return found
