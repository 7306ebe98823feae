"""Disk accounting from /proc/diskstats, the way ``cpu.py`` does CPU: which block device holds
a directory (``disk_device``), how much has been written and flushed on it so far
(``disk_counters``), and what a measurement cost per request (``disk_per_request``)."""

from __future__ import annotations

import os
from pathlib import Path


def disk_device(path: Path) -> str | None:
    """The /proc/diskstats name of the block device holding ``path``, if it is one."""
    dev = os.stat(path).st_dev
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if (int(fields[0]), int(fields[1])) == (os.major(dev), os.minor(dev)):
                return fields[2]
    return None


def disk_counters(device: str | None) -> dict[str, float] | None:
    """Writes, KiB written, flushes and ms spent writing and flushing so far on ``device``."""
    if device is None:
        return None
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == device:
                values = [int(v) for v in fields[3:]]
                counters = {
                    "writes": values[4],
                    "kib_written": values[6] / 2,
                    "write_ms": values[7],
                }
                if len(values) >= 17:  # flush counters: Linux 5.5 and later
                    counters |= {"flushes": values[15], "flush_ms": values[16]}
                return counters
    return None


def disk_per_request(
    before: dict[str, float] | None, after: dict[str, float] | None, requests: int
) -> dict[str, float] | None:
    """Each counter's growth from ``before`` to ``after``, divided by ``requests``."""
    if before is None or after is None:
        return None
    return {k: (after[k] - before[k]) / requests for k in after}
