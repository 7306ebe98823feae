"""CPU accounting and the machine's state around a measurement: CPU seconds read from /proc
(per process tree, for the whole machine by kind) and from getrusage (this process and its
reaped children), ``CpuMeter`` turning them into % of one core over a ``with`` block, and the
steps that make the machine quiet before one (``quiesce``: flush dirty pages, wait for other
processes to go idle, pre-touch memory)."""

from __future__ import annotations

import mmap
import os
import resource
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a live process, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is the state (stat field 3): ppid is field 4, utime 14, stime 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds used so far by ``root`` and each of its live descendants, by pid."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    used, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in stats:
            used[pid] = stats[pid][1]
        stack.extend(children.get(pid, ()))
    return used


def client_cpu_seconds() -> float:
    """CPU seconds of this process plus its reaped children (curl, wrk, ab)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds of the whole machine since boot by kind, from /proc/stat: ``tasks`` (time
    charged to processes), ``irq`` (interrupts, including the softirq work of loopback
    networking), ``steal`` (taken by the hypervisor) and ``iowait``."""
    with open("/proc/stat") as stat:
        values = [int(v) / CLK_TCK for v in stat.readline().split()[1:]]
    user, nice, system, _idle, iowait, irq, softirq, steal = values[:8]
    return {
        "tasks": user + nice + system,
        "irq": irq + softirq,
        "steal": steal,
        "iowait": iowait,
    }


class CpuMeter:
    """CPU used during a ``with`` block, in % of one core (200% = both cores of this machine):
    the server's process tree (rooted at ``server_pid``), the client (this process, curl, wrk,
    ab), other processes (this machine may be shared: their work disturbs the numbers),
    interrupts, steal, iowait. ``server_processes`` keeps the CPU seconds each of the server's
    processes used during the block, by pid."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.percent: dict[str, float] = {}
        self.server_processes: dict[int, float] = {}

    def _snapshot(self) -> tuple[dict[str, float], dict[int, float]]:
        wall = time.perf_counter()
        processes = tree_cpu_seconds(self.server_pid)
        totals = {
            "wall": wall,
            "server": sum(processes.values()),
            "client": client_cpu_seconds(),
            **machine_cpu_seconds(),
        }
        return totals, processes

    def __enter__(self) -> CpuMeter:
        self._before, self._processes_before = self._snapshot()
        return self

    def __exit__(self, *_: object) -> None:
        after, processes = self._snapshot()
        used = {key: after[key] - self._before[key] for key in after}
        wall = used.pop("wall")
        used["other"] = max(0.0, used.pop("tasks") - used["server"] - used["client"])
        self.percent = {key: 100 * value / wall for key, value in used.items()}
        self.server_processes = {
            pid: seconds - self._processes_before.get(pid, 0.0)
            for pid, seconds in sorted(processes.items())
        }


def machine_busy_percent(seconds: float = 2.0) -> float:
    """How busy the machine's processes are, in % of one core, over ``seconds``."""
    before = machine_cpu_seconds()["tasks"]
    time.sleep(seconds)
    return 100 * (machine_cpu_seconds()["tasks"] - before) / seconds


def wait_for_idle(limit: float, threshold: float = 15.0) -> None:
    """This machine may be shared: wait up to ``limit`` seconds for it to be idle."""
    deadline = time.monotonic() + limit
    while limit > 0 and (busy := machine_busy_percent(0.5)) > threshold:
        if time.monotonic() > deadline:
            print(f"  (machine still {busy:.0f}% busy after waiting {limit:.0f}s; going on)")
            return


def touch_memory(size: int) -> None:
    """Write ``size`` bytes of anonymous memory, then free it.

    This machine is a VM whose freed memory goes back to the host (virtio-balloon free page
    reporting) and whose cold pages are paged out (DAMON): a page written for the first time
    in a while costs a fault on the host, which made 1 GiB uploads up to 2.5x slower, and by
    chance (whichever registry got recently freed pages was fast). Touching twice the blob
    just before the upload gives both registries warm pages for their page cache."""
    if size <= 0:
        return
    block = bytes(64 << 20)  # 64 MiB
    with mmap.mmap(-1, size) as memory:
        for offset in range(0, size, len(block)):
            memory[offset : offset + len(block)] = block[: size - offset]


def quiesce(wait_idle: float, pretouch: int = 0) -> None:
    """Get the machine ready for a measurement: ``sync`` so that dirty pages left by earlier
    runs (Distribution does not fsync) are not written back during this one, wait up to
    ``wait_idle`` seconds for other processes to go idle, then pre-touch ``pretouch`` bytes
    of memory (``touch_memory``)."""
    os.sync()
    wait_for_idle(wait_idle)
    touch_memory(pretouch)
