"""The PostgreSQL backend's plumbing: the pool, transactions, advisory locks, retries, and
coalesced lookups.

**Isolation and locking.** Transactions run at READ COMMITTED, where every statement sees what
was committed before it started, and serialize where the protocol needs it through
transaction-scoped advisory locks, taken in the statement that opens the transaction
(``_transaction``); which locks each change takes is said where it is made (``tag_port.py``).
Locks are always taken repository first, then tag, so they cannot deadlock among themselves;
a deadlock or serialization failure anyway retries the whole transaction (the guard is pure,
so running it again is harmless). A repository row is created with ``INSERT ... ON CONFLICT
DO NOTHING`` and read back if another replica created it first, so that race never surfaces
as a unique violation. Repository ids never change, so writes cache them per handle.

**Reads** are one statement each, and the hot ones (``resolve_tag``, ``get_manifest``,
``blob_size``) are coalesced (``coalesce.py``, ``_coalesced``): the lookups that a worker's
tasks make in one event-loop iteration go to the server as one query, equal keys once. Under
load that makes a GET by tag cost its worker a fraction of a round trip; a lone lookup still
waits for nothing. Each query starts after its lookups were asked, so read-after-write holds
across replicas. Queries reach every table through a whole primary key bound to values (the
repository id and a tag's digest come from scalar subqueries, ``REPO_ID``), so plans do not
depend on statistics: written as joins, a new database without statistics got plans that
scanned every manifest of the repository. Statements are prepared once per connection
(asyncpg's statement cache).

**Connections.** Each handle (one per worker process) opens its connections lazily, on first
use, under a lock: the constructor is cheap and does no I/O, so it can run before a fork or
outside an event loop. The first connection checks the schema version (``schema.py``),
refusing a database that is older (run ``moorage migrate``) or newer than this code. The pool
(``pool.py``) is a list of idle connections: asyncpg's own pool cost a third more client CPU
per query. Nothing resets a connection between uses: this code changes no session state, and
a connection that comes back inside a transaction or from an interrupted operation is closed.
A transaction idle for 30 s (its client gone) is ended by the server, releasing its locks.
Server failures (refused or lost connections, shutdowns, too many connections, timeouts)
become ``MetadataUnavailable``. Behind PgBouncer in transaction mode, prepared statements
need PgBouncer 1.21+ (``max_prepared_statements``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]

from moorage.meta.coalesce import Coalescer
from moorage.meta.errors import BlobBeingDeleted, MetadataError
from moorage.meta.postgres.pool import Pool
from moorage.meta.postgres.schema import CONNECT_TIMEOUT, UNAVAILABLE, check_version, unavailable

T = TypeVar("T")
V = TypeVar("V")
Clock = Callable[[], float]
Key = tuple[str, str]

#: An ``asyncpg.Connection`` (asyncpg ships no type information).
Connection = Any

#: Failures after which the transaction was rolled back and may simply run again.
_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.InvalidCachedStatementError,
)
_ATTEMPTS = 5

_SESSION_SETTINGS = {
    "application_name": "moorage",
    # A transaction here never waits on its client for long (between statements the client
    # runs only the guard); one that does lost its client, and must not hold a tag's lock.
    "idle_in_transaction_session_timeout": "30000",
}

#: A repository's id as a scalar subquery, on the name given as the format's argument.
REPO_ID = "(SELECT id FROM repositories WHERE name = {})"
SELECT_REPO = "SELECT id FROM repositories WHERE name = $1"
_INSERT_REPO = (
    "INSERT INTO repositories (name, created_at) VALUES ($1, $2) "
    "ON CONFLICT (name) DO NOTHING RETURNING id"
)


#: Links a blob into a repository ($1: its id), or renews the link's time: garbage collection
#: spares young links, so a blob uploaded or mounted again waits for the manifest needing it.
LINK_BLOB = (
    "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at"
)


_RECORD_BLOB = """
WITH deleting AS (
    SELECT 1 FROM blob_deletions WHERE digest = $2 AND marked_at IS NOT NULL
), revived AS (
    DELETE FROM blob_deletions WHERE digest = $2 AND marked_at IS NULL
), blob AS (
    INSERT INTO blobs (digest, size, created_at) SELECT $2, $4, $3
    WHERE NOT EXISTS (SELECT 1 FROM deleting)
    ON CONFLICT (digest) DO NOTHING
), link AS (
    INSERT INTO repository_blobs (repo_id, digest, created_at) SELECT $1, $2, $3
    WHERE NOT EXISTS (SELECT 1 FROM deleting)
    ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at
)
SELECT EXISTS (SELECT 1 FROM deleting)
"""


async def record_blob(t: Transaction, repo_id: int, digest: str, size: int, now: float) -> None:
    """Record a blob and link it into the repository, in a transaction holding the blob's
    lock shared; a deletion of the blob is undone. BlobBeingDeleted (the caller's transaction
    must roll back) while its bytes are being deleted."""
    if await t.conn.fetchval(_RECORD_BLOB, repo_id, digest, now, size):
        raise BlobBeingDeleted(digest)


def blob_lock(digest: str) -> int:
    """The advisory lock of one blob: held exclusively while garbage collection retires its
    record or starts deleting its bytes, shared while a blob is recorded or mounted."""
    return lock_key("blob", digest)


def lock_key(*parts: str) -> int:
    """A 64-bit advisory lock key for a name; stable across processes and hosts. Collisions
    (2^-64) would only make two unrelated changes wait for each other."""
    data = "\x00".join(parts).encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"moorage-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


#: Taken exclusively by a policy change, shared by a change its guard judges.
POLICY_LOCK = lock_key("policy")


def rowcount(status: str) -> int:
    """Rows a command changed, from its status ("UPDATE 1", "DELETE 0", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


class Transaction:
    """One transaction's connection, and the repositories it created (cached once committed)."""

    __slots__ = ("conn", "created", "known")

    def __init__(self, conn: Connection, known: dict[str, int]) -> None:
        self.conn = conn
        self.known = known
        self.created: dict[str, int] = {}

    async def repo_id(self, name: str) -> int | None:
        """The id of an existing repository, or None."""
        repo_id = self.known.get(name) or self.created.get(name)
        if repo_id is None:
            repo_id = await self.conn.fetchval(SELECT_REPO, name)
            if repo_id is not None:
                self.known[name] = repo_id  # committed by someone: safe to cache
        return repo_id

    async def ensure_repo(self, name: str, now: float) -> int:
        """The id of the repository, created if it does not exist (whoever else races)."""
        repo_id = await self.repo_id(name)
        if repo_id is not None:
            return repo_id
        # Waits for a concurrent creator to finish, then does nothing if it committed; the
        # next statement's snapshot sees that row.
        repo_id = await self.conn.fetchval(_INSERT_REPO, name, now)
        if repo_id is not None:
            self.created[name] = repo_id
            return int(repo_id)
        repo_id = await self.repo_id(name)
        if repo_id is None:  # the concurrent creator rolled back: ours may go in now
            return await self.ensure_repo(name, now)
        return repo_id


class Database:
    """One handle (a worker process's): its pool, opened on first use."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT,
        clock: Clock = time.time,
    ) -> None:
        self._dsn = dsn
        self._pool_min = min(pool_min, pool_max)
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._pool: Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._repo_ids: dict[str, int] = {}
        self._coalescers: dict[str, Coalescer[Key, Any]] = {}

    async def connect(self) -> None:
        """Create the pool and check the schema now rather than on first use (idempotent).

        MetadataUnavailable if the server cannot be reached, SchemaVersionError if the
        database is not at this code's schema version.
        """
        await self._get_pool()

    async def close(self) -> None:
        self._closed = True
        for coalescer in list(self._coalescers.values()):
            await coalescer.wait_idle()
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _get_pool(self) -> Pool:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._pool_lock:
            if self._closed:
                raise MetadataError("the PostgreSQL metadata store is closed")
            if self._pool is None:
                self._pool = await self._create_pool()
            return self._pool

    async def _create_pool(self) -> Pool:
        async def connect() -> Connection:
            return await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                server_settings=_SESSION_SETTINGS,
            )

        pool = Pool(connect, self._pool_max)
        try:
            async with pool.connection() as conn:
                await check_version(conn)
            await pool.fill(self._pool_min)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, UNAVAILABLE):
                raise unavailable(self._dsn, exc) from exc
            raise
        return pool

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                return await conn.fetch(sql, *args)  # type: ignore[no-any-return]
        except UNAVAILABLE as exc:
            raise unavailable(self._dsn, exc) from exc

    async def _fetchrow(self, sql: str, *args: object) -> Any:
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                return await conn.fetchrow(sql, *args)
        except UNAVAILABLE as exc:
            raise unavailable(self._dsn, exc) from exc

    async def _change(self, sql: str, *args: object) -> bool:
        """Run one statement (its own transaction); True if it changed a row."""
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                return rowcount(await conn.execute(sql, *args)) > 0
        except UNAVAILABLE as exc:
            raise unavailable(self._dsn, exc) from exc

    async def _transaction(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        shared: Sequence[int] = (),
        exclusive: Sequence[int] = (),
    ) -> T:
        """Run ``fn`` in one transaction holding the given advisory locks, and commit.

        An exception from ``fn`` rolls everything back. Deadlocks and serialization failures
        run the whole transaction again.
        """
        # Explicitly READ COMMITTED (whatever the server's default): each statement must see
        # what the previous holder of a lock committed, so none may use an older snapshot.
        begin = "BEGIN ISOLATION LEVEL READ COMMITTED"
        for key in shared:
            begin += f"; SELECT pg_advisory_xact_lock_shared({key})"
        for key in exclusive:
            begin += f"; SELECT pg_advisory_xact_lock({key})"
        pool = await self._get_pool()
        for attempt in range(_ATTEMPTS):
            try:
                async with pool.connection() as conn:
                    tx = Transaction(conn, self._repo_ids)
                    result = await self._run(conn, begin, fn, tx)
                self._repo_ids.update(tx.created)
                return result
            except _RETRYABLE:
                if attempt == _ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            except UNAVAILABLE as exc:
                raise unavailable(self._dsn, exc) from exc
        raise AssertionError("unreachable")

    @staticmethod
    async def _run(
        conn: Connection,
        begin: str,
        fn: Callable[[Transaction], Awaitable[T]],
        tx: Transaction,
    ) -> T:
        try:
            await conn.execute(begin)  # no arguments: one simple query, one round trip
            result = await fn(tx)
            await conn.execute("COMMIT")
        except asyncio.CancelledError:
            conn.terminate()  # the server rolls back; the pool opens a new connection
            raise
        except BaseException:
            try:
                if not conn.is_closed() and conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
            except Exception:
                conn.terminate()
            raise
        return result

    def _coalesced(
        self, one: str, many: str, convert: Callable[[Sequence[Any]], V]
    ) -> Coalescer[Key, V]:
        """The coalescer of one lookup by (repository, name), made on first use.

        ``one`` takes the key's two parts as $1 and $2; ``many`` takes two arrays and answers
        each row with the key's 1-based position first."""
        coalescer = self._coalescers.get(one)
        if coalescer is None:

            async def fetch(keys: Sequence[Key]) -> dict[Key, V]:
                if len(keys) == 1:
                    row = await self._fetchrow(one, *keys[0])
                    return {} if row is None else {keys[0]: convert(row)}
                rows = await self._fetch(many, [k[0] for k in keys], [k[1] for k in keys])
                return {keys[row[0] - 1]: convert(row[1:]) for row in rows}

            coalescer = self._coalescers[one] = Coalescer(fetch)
        return cast(Coalescer[Key, V], coalescer)
