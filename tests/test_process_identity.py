"""moorage.process_identity: a lease holder that died on this host is recognised as dead, and
nothing that cannot be checked is ever taken for dead."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from moorage import process_identity
from moorage.process_identity import ProcessIdentity, has_exited, of_pid
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not process_identity.current().checkable, reason="needs /proc (Linux)"
)


def state(pid: int) -> str:
    """The state letter in ``/proc/<pid>/stat`` (after the command name in parentheses)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_current_names_this_process() -> None:
    me = process_identity.current()
    assert me.pid == os.getpid()
    assert ProcessIdentity.parse(str(me)) == me
    assert not has_exited(str(me))


def test_a_running_process_is_alive_and_a_dead_one_is_not(
    child: subprocess.Popen[bytes],
) -> None:
    holder = str(of_pid(child.pid))
    assert not has_exited(holder)
    child.kill()
    # Killed but not yet reaped: a zombie holds no lease.
    wait_until(lambda: state(child.pid) == "Z", "the killed child to become a zombie")
    assert has_exited(holder)
    child.wait()
    assert has_exited(holder)


def test_a_reused_pid_is_not_the_holder(child: subprocess.Popen[bytes]) -> None:
    running = of_pid(child.pid)
    earlier = dataclasses.replace(running, start_time=str(int(running.start_time) - 1))
    assert has_exited(str(earlier))
    assert not has_exited(str(running))


def test_holders_that_cannot_be_checked_are_never_dead(child: subprocess.Popen[bytes]) -> None:
    dead = of_pid(child.pid)
    child.kill()
    child.wait()
    assert has_exited(str(dead))
    for elsewhere in (
        dataclasses.replace(dead, hostname="another-host"),
        dataclasses.replace(dead, boot_id="another-boot"),
        dataclasses.replace(dead, pid_namespace="4026531999"),  # another container's pids
        dataclasses.replace(dead, start_time=""),
    ):
        assert not has_exited(str(elsewhere))
    for garbage in ("", "dead-holder", "a/b/c/d/e/f", "host/boot/ns/pid/start"):
        assert not has_exited(garbage)


def test_a_forked_child_has_its_own_identity() -> None:
    parent = process_identity.current()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, str(process_identity.current()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = ProcessIdentity.parse(pipe.read().decode())
    os.waitpid(pid, 0)
    assert child is not None and child.pid == pid and child != parent
    assert has_exited(str(child))
