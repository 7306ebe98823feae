"""What only the PostgreSQL backend has: migrations, and races between replicas (independent
pools) settled by the database alone. The shared contract runs in the other files."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from moorage.meta.errors import MetadataError, MetadataUnavailable, TagRefused, UploadBusy
from moorage.meta.postgres import PostgresMetadata, lock_key
from moorage.meta.postgres.schema import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    SchemaVersionError,
    apply_migrations,
    migrate,
    schema_version,
)
from moorage.model import Refusal, TagGuard, Upload
from tests.meta.helpers import ACTOR, digest, manifest, new_upload
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until_async

_counter = iter(range(1, 1_000_000))


@pytest.fixture
def empty_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A new database with nothing in it (never migrated)."""
    name = f"moorage_empty_{os.getpid()}_{next(_counter)}"
    dsn = postgres_server.create_database(name)
    yield dsn
    postgres_server.drop_database(name)


@pytest.fixture
async def replicas(postgres_dsn: str) -> AsyncIterator[list[PostgresMetadata]]:
    """Three handles on one database, each with its own pool, as three replicas have."""
    handles = [PostgresMetadata(postgres_dsn, pool_max=8) for _ in range(3)]
    yield handles
    for handle in handles:
        await handle.close()


def freeze(repository: str, tag: str) -> TagGuard:
    def guard(name: str, current: str | None, new: str | None) -> Refusal | None:
        if name == tag and current is not None and current != new:
            return Refusal(repository, name, current, new, "frozen", f"{name} is immutable")
        return None

    return TagGuard(guard)


# -- migrations ---------------------------------------------------------------------------------
async def test_migrate_reports_versions_and_is_idempotent(empty_dsn: str) -> None:
    assert await schema_version(empty_dsn) == 0
    assert await migrate(empty_dsn) == (0, SCHEMA_VERSION)
    assert await migrate(empty_dsn) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert await schema_version(empty_dsn) == SCHEMA_VERSION
    conn = await asyncpg.connect(empty_dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]


async def test_concurrent_migrations_from_tasks_apply_once(empty_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(6)))
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 5


def test_concurrent_migrations_from_processes_apply_once(empty_dsn: str) -> None:
    """Replicas starting together: separate processes, released at the same instant."""
    start = time.time() + 0.5
    script = textwrap.dedent(
        f"""
        import asyncio, time
        from moorage.meta.postgres.schema import migrate
        time.sleep(max(0.0, {start!r} - time.time()))
        print(asyncio.run(migrate({empty_dsn!r})))
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    v = SCHEMA_VERSION
    assert sorted(outputs) == sorted([f"(0, {v})", f"({v}, {v})", f"({v}, {v})"])


async def test_a_failed_migration_keeps_the_versions_before_it(empty_dsn: str) -> None:
    good = Migration(1, "one table", "CREATE TABLE first (n integer)")
    bad = Migration(2, "broken", "CREATE TABLE second (n integer); SELECT no_such_function()")
    conn = await asyncpg.connect(empty_dsn)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await apply_migrations(conn, [good, bad])
        assert await apply_migrations(conn, [good]) == (1, 1)
        assert await conn.fetchval("SELECT to_regclass('second')") is None
    finally:
        await conn.close()
    other = await asyncpg.connect(empty_dsn)  # the migration lock was released
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK)
    finally:
        await other.close()


async def test_an_unmigrated_database_is_refused(empty_dsn: str) -> None:
    store = PostgresMetadata(empty_dsn)
    try:
        with pytest.raises(SchemaVersionError, match="run `moorage migrate`") as info:
            await store.resolve_tag("repo", "latest")
        assert (info.value.found, info.value.expected) == (0, SCHEMA_VERSION)
        with pytest.raises(SchemaVersionError):
            await store.connect()
        await migrate(empty_dsn)
        await store.connect()  # a later call tries again
        assert await store.resolve_tag("repo", "latest") is None
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, 'future')",
            SCHEMA_VERSION + 1,
        )
    finally:
        await conn.close()
    store = PostgresMetadata(postgres_dsn)
    try:
        with pytest.raises(SchemaVersionError, match="newer"):
            await store.list_repositories(None, None)
    finally:
        await store.close()
    with pytest.raises(SchemaVersionError, match="upgrade moorage"):
        await migrate(postgres_dsn)


async def test_a_schema_named_in_the_dsn_holds_everything(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute("CREATE SCHEMA moorage")
    finally:
        await conn.close()
    dsn = f"{empty_dsn}?search_path=moorage"
    assert await migrate(dsn) == (0, SCHEMA_VERSION)
    assert await schema_version(empty_dsn) == 0  # nothing in the default schema
    store = PostgresMetadata(dsn)
    try:
        await store.put_manifest("repo", manifest("m"), "t", ACTOR)
        assert await store.resolve_tag("repo", "t") is not None
    finally:
        await store.close()


# -- races between replicas ---------------------------------------------------------------------
async def test_immutable_tag_race_across_replicas(replicas: list[PostgresMetadata]) -> None:
    """12 pushes of different digests to one new immutable tag, over 3 pools: one wins."""
    records = [manifest(f"racer-{i}") for i in range(12)]
    guard = freeze("prod/app", "v1.0")
    results = await asyncio.gather(
        *(
            replicas[i % 3].put_manifest("prod/app", record, "v1.0", ACTOR, guard)
            for i, record in enumerate(records)
        ),
        return_exceptions=True,
    )
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(r, TagRefused) for i, r in enumerate(results) if i != winners[0])
    winner = records[winners[0]]
    for handle in replicas:
        resolved = await handle.resolve_tag("prod/app", "v1.0")
        assert resolved is not None and resolved.digest == winner.digest
    events = await replicas[1].tag_history("prod/app", "v1.0", None, None)
    assert [e.action for e in events].count("created") == 1
    assert [e.action for e in events].count("refused") == 11
    assert events[-1].action == "created" and events[-1].new_digest == winner.digest
    assert all(e.old_digest == winner.digest for e in events[:-1])
    # Refused manifests were not stored.
    for i, record in enumerate(records):
        stored = await replicas[0].get_manifest("prod/app", record.digest)
        assert (stored is not None) == (i == winners[0])


async def test_a_moving_tag_keeps_a_consistent_history(replicas: list[PostgresMetadata]) -> None:
    """Concurrent moves of one tag: ids grow in commit order, each event continues the last."""
    records = [manifest(f"move-{i}") for i in range(15)]
    await asyncio.gather(
        *(
            replicas[i % 3].put_manifest("dev/app", record, "latest", ACTOR)
            for i, record in enumerate(records)
        )
    )
    events = list(reversed(await replicas[2].tag_history("dev/app", "latest", None, None)))
    assert [e.action for e in events] == ["created"] + ["moved"] * 14
    assert [e.id for e in events] == sorted(e.id for e in events)
    for before, after in itertools.pairwise(events):
        assert after.old_digest == before.new_digest
    resolved = await replicas[0].resolve_tag("dev/app", "latest")
    assert resolved is not None and resolved.digest == events[-1].new_digest


async def test_replicas_creating_one_repository_at_once(replicas: list[PostgresMetadata]) -> None:
    names = [f"new/repo{i}" for i in range(4)]
    blob = digest("layer")
    await replicas[0].add_blob("source", blob, 5)
    calls = []
    for name in names:
        for i in range(9):
            handle = replicas[i % 3]
            if i % 3 == 0:
                calls.append(handle.add_blob(name, blob, 5))
            elif i % 3 == 1:
                calls.append(handle.mount_blob(name, blob, "source"))
            else:
                calls.append(handle.put_manifest(name, manifest(f"{name}-{i}"), (), ACTOR))
    await asyncio.gather(*calls)
    assert await replicas[1].list_repositories(None, None) == sorted([*names, "source"])
    for name in names:
        assert await replicas[2].blob_size(name, blob) == 5


async def test_upload_lease_fencing_across_replicas(replicas: list[PostgresMetadata]) -> None:
    first, second, third = replicas
    upload = new_upload("6f1c3c6e-0000-4000-8000-0000000000a1")
    await first.create_upload(upload)
    taken = await first.acquire_upload(upload.id, "repo", 0, 100.0, 60)
    with pytest.raises(UploadBusy):
        await second.acquire_upload(upload.id, "repo", 0, 120.0, 60)
    # The first holder stalls past its lease; the second takes over and is fenced from it.
    over = await second.acquire_upload(upload.id, "repo", 0, 200.0, 60)
    assert not await first.renew_upload(upload.id, taken.lease_until, 400.0)
    assert not await first.release_upload(upload.id, taken.lease_until, 10, b"stale", 201.0)
    assert await second.release_upload(upload.id, over.lease_until, 20, b"fresh", 202.0)
    current = await third.get_upload(upload.id, "repo")
    assert current is not None
    assert (current.offset, current.hash_state, current.lease_until) == (20, b"fresh", 0.0)
    # Twelve racers for a free lease: one gets it.
    results = await asyncio.gather(
        *(replicas[i % 3].acquire_upload(upload.id, "repo", 20, 300.0, 60) for i in range(12)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Upload) for r in results) == 1
    assert sum(isinstance(r, UploadBusy) for r in results) == 11


async def test_a_push_waits_for_the_tag_lock_and_can_be_cancelled(
    replicas: list[PostgresMetadata], postgres_dsn: str
) -> None:
    """The tag's advisory lock is what serializes; a push cancelled while it waits leaves
    nothing behind, and its handle stays usable."""
    store = replicas[0]
    await store.list_repositories(None, None)  # pool ready
    holder = await asyncpg.connect(postgres_dsn)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT pg_advisory_xact_lock($1)", lock_key("tag", "repo", "v1"))
        push = asyncio.ensure_future(store.put_manifest("repo", manifest("m"), "v1", ACTOR))

        async def push_waits_for_the_lock() -> bool:
            return bool(
                await holder.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
            )

        await wait_until_async(push_waits_for_the_lock, "the push to wait for the tag's lock")
        assert not push.done()
        push.cancel()
        with pytest.raises(asyncio.CancelledError):
            await push
        await holder.execute("COMMIT")
    finally:
        await holder.close()
    assert await store.resolve_tag("repo", "v1") is None
    await store.put_manifest("repo", manifest("m"), "v1", ACTOR)
    assert await store.resolve_tag("repo", "v1") is not None


async def test_concurrent_lookups_get_their_own_answers(
    replicas: list[PostgresMetadata],
) -> None:
    """Lookups coalesced into one query each get the answer for their own key."""
    store = replicas[0]
    expected_tags: dict[tuple[str, str], str | None] = {}
    expected_manifests: dict[tuple[str, str], bool] = {}
    for r in range(3):
        repository = f"team/app{r}"
        await store.add_blob(repository, digest(f"blob{r}"), 10 + r)
        for t in range(5):
            record = manifest(f"{r}-{t}")
            await store.put_manifest(repository, record, f"v{t}", ACTOR)
            expected_tags[(repository, f"v{t}")] = record.digest
            expected_manifests[(repository, record.digest)] = True
            expected_manifests[(f"team/app{(r + 1) % 3}", record.digest)] = False
        expected_tags[(repository, "missing")] = None
    expected_tags[("no/such", "v0")] = None
    reader = replicas[1]
    tag_keys = list(expected_tags) * 3
    manifest_keys = list(expected_manifests)
    results = await asyncio.gather(
        *(reader.resolve_tag(*key) for key in tag_keys),
        *(reader.get_manifest(*key) for key in manifest_keys),
        *(reader.blob_size(f"team/app{r}", digest(f"blob{r % 3}")) for r in range(4)),
    )
    resolved = results[: len(tag_keys)]
    assert [None if m is None else m.digest for m in resolved] == [
        expected_tags[key] for key in tag_keys
    ]
    fetched = results[len(tag_keys) : len(tag_keys) + len(manifest_keys)]
    assert [m is not None for m in fetched] == [expected_manifests[k] for k in manifest_keys]
    assert all(m is None or m.digest == k[1] for m, k in zip(fetched, manifest_keys, strict=True))
    assert results[-4:] == [10, 11, 12, None]


# -- failures -----------------------------------------------------------------------------------
async def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"postgresql://moorage:secret-password@127.0.0.1:{port}/moorage"
    store = PostgresMetadata(dsn)
    started = time.monotonic()
    try:
        with pytest.raises(MetadataUnavailable) as info:
            await store.resolve_tag("repo", "latest")
    finally:
        await store.close()
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}/moorage" in str(info.value)
    assert "secret-password" not in str(info.value)
    with pytest.raises(MetadataUnavailable):
        await migrate(dsn)


async def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        store = PostgresMetadata(
            f"postgresql://moorage@127.0.0.1:{port}/moorage", connect_timeout=0.5
        )
        started = time.monotonic()
        try:
            with pytest.raises(MetadataUnavailable, match="timed out"):
                await store.policy_version()
        finally:
            await store.close()
        assert time.monotonic() - started < 3


async def test_terminated_connections_are_replaced(
    replicas: list[PostgresMetadata], postgres_dsn: str
) -> None:
    store = replicas[0]
    await store.put_manifest("repo", manifest("m"), "t", ACTOR)
    admin = await asyncpg.connect(postgres_dsn)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'moorage'"
        )
    finally:
        await admin.close()
    assert killed >= 1
    pool = await store._get_pool()
    await wait_until_async(
        lambda: all(conn.is_closed() for conn in pool._idle),
        "the pool to see its connections close",
    )
    resolved = await store.resolve_tag("repo", "t")
    assert resolved is not None
    await store.put_manifest("repo", manifest("n"), "t", ACTOR)


async def test_a_closed_handle_refuses_work(postgres_dsn: str) -> None:
    store = PostgresMetadata(postgres_dsn)
    await store.connect()
    await store.connect()
    await store.close()
    with pytest.raises(MetadataError, match="closed"):
        await store.resolve_tag("repo", "t")


def test_the_constructor_does_no_io() -> None:
    """Built in every worker before its event loop runs: no connection, no loop needed."""
    store = PostgresMetadata("postgresql://nobody@127.0.0.1:1/none")
    assert store._pool is None
