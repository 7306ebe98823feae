"""moorage.registry.upload_sessions: leases that outlive slow requests and fence off lost
ones, and are taken over from dead holders only."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from moorage import process_identity
from moorage.digest import Digest
from moorage.errors import RegistryError
from moorage.registry.uploads import Uploads
from tests.registry.upload_bodies import DATA, body_of, slow_body
from tests.support.waiting import wait_until_async


async def test_a_slow_request_keeps_its_lease(uploads: Uploads) -> None:
    upload = await uploads.start("repo")
    parts = [bytes([n]) * 1000 for n in range(8)]
    # 8 x 0.1 s: well past the 0.3 s lease, renewed every 0.1 s.
    appended = await uploads.append("repo", upload.id, slow_body(parts, 0.1))
    assert appended.offset == 8000
    data = b"".join(parts)
    size = await uploads.finish(
        "repo", upload.id, Digest("sha256", hashlib.sha256(data).hexdigest()), slow_body([], 0)
    )
    assert size == 8000


async def test_a_request_that_lost_its_lease_cannot_record_progress(uploads: Uploads) -> None:
    upload = await uploads.start("repo")

    async def lease_ran_out() -> bool:
        current = await uploads.meta.get_upload(upload.id, "repo")
        assert current is not None
        return current.lease_until < uploads.sessions.clock()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"a" * 100
        # Another request takes the upload over once the lease has run out...
        await wait_until_async(lease_ran_out, "the stalled request's lease to run out")
        now = uploads.sessions.clock()
        taken = await uploads.meta.acquire_upload(upload.id, "repo", None, now, 60)
        assert taken.offset == 0
        yield b"b" * 100

    with pytest.raises(RegistryError) as info:
        await uploads.append("repo", upload.id, stalled())
    assert info.value.status == 416
    current = await uploads.meta.get_upload(upload.id, "repo")
    assert current is not None and current.offset == 0 and current.lease_until > 0


async def test_a_dead_holders_lease_is_taken_over(checkpointed: Uploads) -> None:
    upload = await checkpointed.start("repo")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = str(process_identity.of_pid(dead.pid))
    dead.wait()
    now = checkpointed.sessions.clock()
    await checkpointed.meta.acquire_upload(upload.id, "repo", 0, now, 300, holder)
    appended = await checkpointed.append("repo", upload.id, body_of(DATA))
    assert appended.offset == len(DATA)
    assert checkpointed.counters.leases_taken_over == 1


async def test_a_live_or_unknown_holders_lease_is_not_taken_over(checkpointed: Uploads) -> None:
    for holder in (str(process_identity.current()), "another-host/boot/ns/1/1", ""):
        upload = await checkpointed.start("repo")
        now = checkpointed.sessions.clock()
        await checkpointed.meta.acquire_upload(upload.id, "repo", 0, now, 300, holder)
        with pytest.raises(RegistryError) as info:
            await checkpointed.append("repo", upload.id, body_of(b"x"))
        assert info.value.status == 416 and "another request" in info.value.message
    assert checkpointed.counters.leases_taken_over == 0
