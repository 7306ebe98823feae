"""Names for running processes that another process on the same host can check.

An upload's lease records which process holds it as
``<hostname>/<boot id>/<pid namespace>/<pid>/<start time>``. A process that shares the boot
id and the PID namespace (the same running kernel, the same view of process ids) can tell
whether the holder still runs: its pid exists, is not a zombie, and started at the same clock
tick (a reused pid started later). So a request arriving after a crash takes over the dead
worker's lease at once instead of waiting for it to expire.

A holder that cannot be checked (another host, another container's PID namespace, another
boot, or a system without ``/proc``) is never declared dead; its lease runs out instead. The
PID namespace matters: pods sharing the host's network share its hostname, and a pid that is
missing from this namespace may be alive in theirs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

_PROC = "/proc"


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    hostname: str
    #: ``/proc/sys/kernel/random/boot_id``: changes at every boot.
    boot_id: str
    #: The inode of ``/proc/self/ns/pid``: which PID namespace ``pid`` belongs to.
    pid_namespace: str
    pid: int
    #: Field 22 of ``/proc/<pid>/stat``: when the process started, in clock ticks since boot.
    start_time: str

    def __str__(self) -> str:
        return "/".join(
            (self.hostname, self.boot_id, self.pid_namespace, str(self.pid), self.start_time)
        )

    @classmethod
    def parse(cls, text: str) -> ProcessIdentity | None:
        parts = text.split("/")
        if len(parts) != 5 or not parts[3].isdigit():
            return None
        hostname, boot_id, namespace, pid, start_time = parts
        return cls(hostname, boot_id, namespace, int(pid), start_time)

    @property
    def checkable(self) -> bool:
        """Whether another process can ever tell if this one runs (``/proc`` was readable)."""
        return bool(self.boot_id and self.pid_namespace and self.start_time)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from the third (state) on; None if there is none.
    The command name (field 2) may hold spaces and parentheses, so split after its last ')'."""
    text = _read(f"{_PROC}/{pid}/stat")
    _, paren, rest = text.rpartition(")")
    return rest.split() if paren else None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _pid_namespace() -> str:
    try:
        link = os.readlink(f"{_PROC}/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""
    return link.partition("[")[2].rstrip("]")


def _hostname() -> str:
    return socket.gethostname().replace("/", "_")


def of_pid(pid: int) -> ProcessIdentity:
    """The identity of process ``pid`` of this host and PID namespace, as it runs now."""
    fields = _stat_fields(pid)
    start_time = fields[19] if fields is not None and len(fields) > 19 else ""
    return ProcessIdentity(
        _hostname(),
        _read(f"{_PROC}/sys/kernel/random/boot_id"),
        _pid_namespace(),
        pid,
        start_time,
    )


_current: ProcessIdentity | None = None


def current() -> ProcessIdentity:
    """This process's identity (computed again in a forked child, whose pid differs)."""
    global _current
    if _current is None or _current.pid != os.getpid():
        _current = of_pid(os.getpid())
    return _current


def has_exited(holder: str) -> bool:
    """True only if ``holder`` names a process this one can check and it no longer runs: gone,
    a zombie, or its pid now belongs to a process that started at another time. False when
    it runs or when that cannot be known here."""
    other = ProcessIdentity.parse(holder)
    me = current()
    if other is None or not other.checkable or not me.checkable:
        return False
    if (other.hostname, other.boot_id, other.pid_namespace) != (
        me.hostname,
        me.boot_id,
        me.pid_namespace,
    ):
        return False
    if other.pid == me.pid:
        return other.start_time != me.start_time
    fields = _stat_fields(other.pid)
    if fields is None or len(fields) <= 19:
        return not _exists(other.pid)  # /proc may hide other users' processes (hidepid)
    state, start_time = fields[0], fields[19]
    return state in ("Z", "X") or start_time != other.start_time
