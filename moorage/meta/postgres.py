"""PostgreSQL metadata backend: one database shared by every stateless replica.

Same semantics as the SQLite backend (``tests/meta`` runs against both); what differs is how
atomicity is kept when many processes on many hosts write at once.

**Isolation and locking.** Transactions run at READ COMMITTED, where every statement sees what
was committed before it started, and serialize where the protocol needs it through
transaction-scoped advisory locks, taken in the statement that opens the transaction:

- a change to a tag (push with a tag, tag deletion, restore) takes an exclusive lock on the
  hash of (repository, tag) and a *shared* lock on the repository's hash. The next statement
  reads the tag's current digest; the guard decides on it; the change (or the refusal's history
  row) commits before the lock is released. So pushes racing for one new immutable tag queue
  on the lock, and each later one reads the winner's digest and is refused. A row that does not
  exist yet cannot be locked with ``SELECT ... FOR UPDATE``; a lock on the name can. A push
  with several tags locks each of them, in ascending order of lock key, so two pushes naming
  the same tags in different orders cannot deadlock.
- a push without a tag takes the shared repository lock (its check that the child manifests
  exist must not race a manifest deletion);
- a manifest deletion takes the repository lock *exclusively*: it must see every tag on the
  manifest and on the indexes listing it, with no push adding one meanwhile. Deletions are
  rare; pushes to different tags of one repository still run in parallel.
- policy changes take one exclusive lock, and every change a guard judges takes it *shared*:
  the guard's policy version is read in the transaction (``PolicyChanged`` if it is not the
  one stored), and no policy change can commit until the transaction has.

Locks are always taken repository first, then tag, so they cannot deadlock among themselves;
a deadlock or serialization failure anyway retries the whole transaction (the guard is pure,
so running it again is harmless). Upload leases need no transaction: acquiring one is a
single ``UPDATE ... WHERE lease_until <= now`` (PostgreSQL re-checks the condition on the
newest row version after waiting for a concurrent update, so exactly one of several racers
gets it), and renew/release compare the lease value, which fences off a holder whose lease was
taken over. A repository row is created with ``INSERT ... ON CONFLICT DO NOTHING`` and read
back if another replica created it first, so that race never surfaces as a unique violation.
Tag history ids come from an identity column; since a tag's events are written under the
tag's lock, its ids grow in commit order.

**Reads** are one statement each, and the hot ones (``resolve_tag``, ``get_manifest``,
``blob_size``) are coalesced (``coalesce.py``): the lookups that a worker's tasks make in one
event-loop iteration go to the server as one query, equal keys once. Under load that makes a
GET by tag cost its worker a fraction of a round trip; a lone lookup still waits for nothing.
Each query starts after its lookups were asked, so read-after-write holds across replicas.
Queries reach every table through a whole primary key bound to values (the repository id and
a tag's digest come from scalar subqueries), so plans do not depend on statistics: written as
joins, a new database without statistics got plans that scanned every manifest of the
repository. Repository ids never change, so writes cache them per handle.

**Writes.** A push with tags is four round trips, however many tags it names: BEGIN with the
locks (one simple query), the tags' current digests together with any missing references, one
statement writing manifest, references, tags and history (data-modifying CTEs over arrays),
and COMMIT. Statements are
prepared once per connection (asyncpg's statement cache).

**Connections.** Each handle (one per worker process) opens its connections lazily, on first
use, under a lock: the constructor is cheap and does no I/O, so it can run before a fork or
outside an event loop. The first connection checks the schema version (``postgres_schema``),
refusing a database that is older (run ``moorage migrate``) or newer than this code. The pool
(``postgres_pool.py``) is a list of idle connections: asyncpg's own pool cost a third more
client CPU per query. Nothing resets a connection between uses: this code changes no session
state, and a connection that comes back inside a transaction or from an interrupted
operation is closed. A transaction idle for 30 s (its client gone) is ended by the server,
releasing its locks. Server failures (refused or lost connections, shutdowns, too many
connections, timeouts) become ``MetadataUnavailable``. Behind PgBouncer in transaction mode,
prepared statements need PgBouncer 1.21+ (``max_prepared_statements``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from moorage.meta.base import (
    ManifestNotFound,
    MetadataError,
    MissingReferences,
    PolicyChanged,
    TagRefused,
    UploadBusy,
    UploadNotFound,
    UploadOffsetMismatch,
)
from moorage.meta.coalesce import Coalescer
from moorage.meta.postgres_pool import Pool
from moorage.meta.postgres_schema import CONNECT_TIMEOUT, UNAVAILABLE, check_version, unavailable
from moorage.model import (
    REGISTRY_ACTOR,
    Actor,
    ManifestRecord,
    PinRecord,
    PolicyChange,
    PolicyRecord,
    PutResult,
    ReferrerRecord,
    Refusal,
    TagAction,
    TagEvent,
    TagGuard,
    Upload,
    push_tags,
)

T = TypeVar("T")
V = TypeVar("V")

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

_MANIFEST_COLUMNS = "m.digest, m.media_type, m.payload, m.artifact_type, m.subject, m.annotations"
_EVENT_FIELDS = (
    'repository, tag, action, old_digest, new_digest, at, "user", address, request_id, rule, reason'
)
_INSERT_EVENT = (
    f"INSERT INTO tag_events ({_EVENT_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
    "$10, $11)"
)
_UPLOAD_COLUMNS = (
    'id, repository, "offset", hash_state, created_at, updated_at, lease_until, lease_owner'
)
_PIN_FIELDS = (
    "at, namespace, kind, name, container_kind, container, image, repository, tag, digest, "
    'source, request_uid, "user"'
)
_PIN_TYPES = ("float8",) + ("text",) * 12

_SELECT_REPO = "SELECT id FROM repositories WHERE name = $1"
_INSERT_REPO = (
    "INSERT INTO repositories (name, created_at) VALUES ($1, $2) "
    "ON CONFLICT (name) DO NOTHING RETURNING id"
)

# put_manifest: the current digest of each tag ($2, in order; NULL for a new tag), the
# (1-based) positions of missing references, and the stored policy's version.
_PUT_CHECK = """
SELECT ARRAY(SELECT (SELECT digest FROM tags WHERE repo_id = $1 AND name = q.name)
             FROM unnest($2::text[]) WITH ORDINALITY AS q (name, ord)
             ORDER BY q.ord),
       ARRAY(SELECT r.ord
             FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS r (kind, target, ord)
             WHERE NOT CASE WHEN r.kind = 'blob'
                 THEN EXISTS (SELECT 1 FROM repository_blobs b
                              WHERE b.repo_id = $1 AND b.digest = r.target)
                 ELSE EXISTS (SELECT 1 FROM manifests m
                              WHERE m.repo_id = $1 AND m.digest = r.target) END
             ORDER BY r.ord),
       (SELECT version FROM policy WHERE id = 1)
"""
# put_manifest: the manifest, its references, and the tags it changes ($12, with the action $13
# and the digest each held before $15, in the order given) with their history rows, in one
# statement.
_PUT_WRITE = f"""
WITH manifest AS (
    INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, annotations,
                           size, payload, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING
), refs AS (
    INSERT INTO manifest_references (repo_id, digest, kind, target)
    SELECT DISTINCT $1::bigint, $2::text, r.kind, r.target
    FROM unnest($10::text[], $11::text[]) AS r (kind, target)
    ON CONFLICT DO NOTHING
), tag AS (
    INSERT INTO tags (repo_id, name, digest, updated_at)
    SELECT $1, c.name, $2, $9 FROM unnest($12::text[]) AS c (name)
    ON CONFLICT (repo_id, name) DO UPDATE
        SET digest = excluded.digest, updated_at = excluded.updated_at
)
INSERT INTO tag_events ({_EVENT_FIELDS})
SELECT $14, c.name, c.action, c.old, $2, $9, $16, $17, $18, NULL, NULL
FROM unnest($12::text[], $13::text[], $15::text[]) WITH ORDINALITY AS c (name, action, old, ord)
ORDER BY c.ord
"""
_POINT_TAG = f"""
WITH tag AS (
    INSERT INTO tags (repo_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (repo_id, name) DO UPDATE
        SET digest = excluded.digest, updated_at = excluded.updated_at
)
INSERT INTO tag_events ({_EVENT_FIELDS})
VALUES ($5, $2, $6, $7, $3, $4, $8, $9, $10, NULL, NULL)
"""
_DELETE_TAG = f"""
WITH tag AS (DELETE FROM tags WHERE repo_id = $1 AND name = $2)
INSERT INTO tag_events ({_EVENT_FIELDS})
VALUES ($3, $2, 'deleted', $4, NULL, $5, $6, $7, $8, NULL, NULL)
"""
_DIGEST_EVENTS = f"""
WITH pointed AS (
    SELECT id, repository, tag FROM tag_events WHERE new_digest = $1 AND action <> 'refused'
)
SELECT id, {_EVENT_FIELDS} FROM tag_events WHERE id IN (
    SELECT id FROM pointed
    UNION
    SELECT (SELECT min(n.id) FROM tag_events n
            WHERE n.repository = p.repository AND n.tag = p.tag AND n.id > p.id
              AND n.action <> 'refused')
    FROM pointed p
) ORDER BY id
"""


_SET_POLICY = """
WITH policy_row AS (
    INSERT INTO policy (id, document, version, source, source_hash, updated_at, "user", address)
    VALUES (1, $1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (id) DO UPDATE SET
        document = excluded.document, version = excluded.version, source = excluded.source,
        source_hash = excluded.source_hash, updated_at = excluded.updated_at,
        "user" = excluded."user", address = excluded.address
)
INSERT INTO policy_changes (at, "user", address, request_id, source, old_document, new_document)
VALUES ($5, $6, $7, $8, $3, $9, $1)
"""


# Reads find the repository's id, and a tag's digest, in scalar subqueries: every table is
# then reached through its whole primary key (or an index prefix) bound to values, so the plan
# cannot depend on statistics. (Written as joins, a planner without statistics, as on a new
# database, scanned every manifest of the repository: 4 ms for 50 lookups instead of 0.3.)
_REPO_ID = "(SELECT id FROM repositories WHERE name = {})"
_TAG_DIGEST = "(SELECT digest FROM tags WHERE repo_id = {repo} AND name = {tag})"
_RESOLVE_TAG = f"""
SELECT {_MANIFEST_COLUMNS} FROM manifests m
WHERE m.repo_id = {_REPO_ID.format("$1")}
  AND m.digest = {_TAG_DIGEST.format(repo=_REPO_ID.format("$1"), tag="$2")}
"""
# Several at once: one such lookup per key, in a subquery that OFFSET 0 keeps the planner from
# flattening into a join.
_RESOLVE_TAGS = f"""
SELECT q.i, f.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (repository, tag, i)
CROSS JOIN LATERAL (
    SELECT {_MANIFEST_COLUMNS} FROM manifests m
    WHERE m.repo_id = {_REPO_ID.format("q.repository")}
      AND m.digest = {_TAG_DIGEST.format(repo=_REPO_ID.format("q.repository"), tag="q.tag")}
    OFFSET 0
) f
"""
_GET_MANIFEST = f"""
SELECT {_MANIFEST_COLUMNS} FROM manifests m
WHERE m.repo_id = {_REPO_ID.format("$1")} AND m.digest = $2
"""
_GET_MANIFESTS = f"""
SELECT q.i, f.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (repository, digest, i)
CROSS JOIN LATERAL (
    SELECT {_MANIFEST_COLUMNS} FROM manifests m
    WHERE m.repo_id = {_REPO_ID.format("q.repository")} AND m.digest = q.digest OFFSET 0
) f
"""
_BLOB_SIZE = f"""
SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest
WHERE l.repo_id = {_REPO_ID.format("$1")} AND l.digest = $2
"""
_BLOB_SIZES = f"""
SELECT q.i, f.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q (repository, digest, i)
CROSS JOIN LATERAL (
    SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest
    WHERE l.repo_id = {_REPO_ID.format("q.repository")} AND l.digest = q.digest OFFSET 0
) f
"""


def lock_key(*parts: str) -> int:
    """A 64-bit advisory lock key for a name; stable across processes and hosts. Collisions
    (2^-64) would only make two unrelated changes wait for each other."""
    data = "\x00".join(parts).encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"moorage-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


#: Taken exclusively by a policy change, shared by a change its guard judges.
_POLICY_LOCK = lock_key("policy")
_POLICY_VERSION = "SELECT version FROM policy WHERE id = 1"


def _policy_lock(guard: TagGuard | None) -> tuple[int, ...]:
    return () if guard is None or guard.policy_version is None else (_POLICY_LOCK,)


def _rowcount(status: str) -> int:
    """Rows a command changed, from its status ("UPDATE 1", "DELETE 0", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


def _manifest(row: Sequence[Any]) -> ManifestRecord:
    return ManifestRecord(
        digest=row[0],
        media_type=row[1],
        payload=bytes(row[2]),
        artifact_type=row[3],
        subject=row[4],
        annotations=row[5],
    )


def _upload(row: Sequence[Any]) -> Upload:
    return Upload(*row)


def _check_policy(guard: TagGuard | None, stored: int | None) -> None:
    """PolicyChanged unless ``guard`` (if any) enforces the policy at version ``stored``."""
    if guard is None or guard.policy_version is None:
        return
    if (stored or 0) != guard.policy_version:
        raise PolicyChanged(guard.policy_version, stored or 0)


def _unless_refused(result: T | Refusal | TagRefused) -> T:
    """Results of transactions that may end in recorded refusals: raise them after commit."""
    if isinstance(result, Refusal):
        raise TagRefused(result)
    if isinstance(result, TagRefused):
        raise result
    return result


class _Transaction:
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
            repo_id = await self.conn.fetchval(_SELECT_REPO, name)
            if repo_id is not None:
                self.known[name] = repo_id  # committed by someone: safe to cache
        return repo_id

    async def ensure_repo(self, name: str) -> int:
        """The id of the repository, created if it does not exist (whoever else races)."""
        repo_id = await self.repo_id(name)
        if repo_id is not None:
            return repo_id
        # Waits for a concurrent creator to finish, then does nothing if it committed; the
        # next statement's snapshot sees that row.
        repo_id = await self.conn.fetchval(_INSERT_REPO, name, time.time())
        if repo_id is not None:
            self.created[name] = repo_id
            return int(repo_id)
        repo_id = await self.repo_id(name)
        if repo_id is None:  # the concurrent creator rolled back: ours may go in now
            return await self.ensure_repo(name)
        return repo_id

    async def record(
        self,
        repository: str,
        tag: str,
        action: TagAction,
        old: str | None,
        new: str | None,
        actor: Actor,
        now: float,
        rule: str | None = None,
        reason: str | None = None,
    ) -> None:
        await self.conn.execute(
            _INSERT_EVENT,
            repository,
            tag,
            action,
            old,
            new,
            now,
            actor.user,
            actor.address,
            actor.request_id,
            rule,
            reason,
        )

    async def refused(self, refusal: Refusal, actor: Actor, now: float) -> Refusal:
        await self.record(
            refusal.repository,
            refusal.tag,
            "refused",
            refusal.current_digest,
            refusal.attempted_digest,
            actor,
            now,
            refusal.rule,
            refusal.message,
        )
        return refusal

    async def check_policy(self, guard: TagGuard | None) -> None:
        """PolicyChanged unless ``guard`` enforces the policy stored now (the transaction holds
        the shared policy lock, so no policy change can commit before it does)."""
        if guard is not None and guard.policy_version is not None:
            _check_policy(guard, await self.conn.fetchval(_POLICY_VERSION))

    async def refuse_deletion(
        self, affected: Sequence[Sequence[str]], guard: TagGuard, actor: Actor, now: float
    ) -> Refusal | None:
        """Ask the guard about each (tag, digest it holds) a deletion would break; record and
        return the first refusal."""
        for tag, tagged in affected:
            refusal = guard(tag, tagged, None)
            if refusal is not None:
                return await self.refused(refusal, actor, now)
        return None


class PostgresMetadata:
    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._dsn = dsn
        self._pool_min = min(pool_min, pool_max)
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self._pool: Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._repo_ids: dict[str, int] = {}
        self._tags = Coalescer(self._resolve_tags)
        self._manifests = Coalescer(self._get_manifests)
        self._blob_sizes = Coalescer(self._get_blob_sizes)

    # -- plumbing -----------------------------------------------------------------------------
    async def connect(self) -> None:
        """Create the pool and check the schema now rather than on first use (idempotent).

        MetadataUnavailable if the server cannot be reached, SchemaVersionError if the
        database is not at this code's schema version.
        """
        await self._get_pool()

    async def close(self) -> None:
        self._closed = True
        await self._tags.wait_idle()
        await self._manifests.wait_idle()
        await self._blob_sizes.wait_idle()
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
                return _rowcount(await conn.execute(sql, *args)) > 0
        except UNAVAILABLE as exc:
            raise unavailable(self._dsn, exc) from exc

    async def _transaction(
        self,
        fn: Callable[[_Transaction], Awaitable[T]],
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
                    tx = _Transaction(conn, self._repo_ids)
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
        fn: Callable[[_Transaction], Awaitable[T]],
        tx: _Transaction,
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

    def _repo_lock(self, repository: str) -> int:
        return lock_key("repository", repository)

    def _tag_locks(
        self, repository: str, tags: Sequence[str], guard: TagGuard | None
    ) -> dict[str, Sequence[int]]:
        """The locks of a change to ``tags``: the repository (and the policy, for a guarded
        change) shared, and each tag exclusively, in ascending order of key, so that changes
        to overlapping sets of tags take them in one order and cannot deadlock."""
        return {
            "shared": (lock_key("repository", repository), *_policy_lock(guard)),
            "exclusive": sorted({lock_key("tag", repository, tag) for tag in tags}),
        }

    # -- blobs --------------------------------------------------------------------------------
    async def add_blob(self, repository: str, digest: str, size: int) -> None:
        async def tx(t: _Transaction) -> None:
            repo_id = await t.ensure_repo(repository)
            await t.conn.execute(
                "WITH blob AS (INSERT INTO blobs (digest, size, created_at) VALUES ($2, $3, $4) "
                "ON CONFLICT (digest) DO NOTHING) "
                "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $4) "
                "ON CONFLICT DO NOTHING",
                repo_id,
                digest,
                size,
                time.time(),
            )

        await self._transaction(tx)

    async def blob_size(self, repository: str, digest: str) -> int | None:
        return await self._blob_sizes.get((repository, digest))

    async def _get_blob_sizes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        return await self._lookup(_BLOB_SIZE, _BLOB_SIZES, keys, lambda row: int(row[0]))

    async def find_blob(self, digest: str) -> int | None:
        row = await self._fetchrow("SELECT size FROM blobs WHERE digest = $1", digest)
        return None if row is None else int(row[0])

    async def mount_blob(self, repository: str, digest: str, source: str | None) -> int | None:
        async def tx(t: _Transaction) -> int | None:
            if source is None:
                size = await t.conn.fetchval("SELECT size FROM blobs WHERE digest = $1", digest)
            else:
                size = await t.conn.fetchval(
                    "SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest "
                    f"WHERE l.repo_id = {_REPO_ID.format('$1')} AND l.digest = $2",
                    source,
                    digest,
                )
            if size is None:
                return None
            repo_id = await t.ensure_repo(repository)
            await t.conn.execute(
                "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                repo_id,
                digest,
                time.time(),
            )
            return int(size)

        return await self._transaction(tx)

    async def unlink_blob(
        self,
        repository: str,
        digest: str,
        actor: Actor = REGISTRY_ACTOR,
        guard: TagGuard | None = None,
    ) -> bool:
        if guard is None:
            return await self._change(
                "DELETE FROM repository_blobs WHERE digest = $1 "
                f"AND repo_id = {_REPO_ID.format('$2')}",
                digest,
                repository,
            )

        async def tx(t: _Transaction) -> bool | Refusal:
            await t.check_policy(guard)
            repo_id = await t.repo_id(repository)
            if repo_id is None or not await t.conn.fetchval(
                "SELECT true FROM repository_blobs WHERE repo_id = $1 AND digest = $2",
                repo_id,
                digest,
            ):
                return False
            # Tags on manifests using the blob, and on indexes listing such manifests.
            affected = await t.conn.fetch(
                "WITH users AS (SELECT digest FROM manifest_references WHERE repo_id = $1 "
                "AND kind = 'blob' AND target = $2) SELECT name, digest FROM tags "
                "WHERE repo_id = $1 AND (digest IN (SELECT digest FROM users) OR digest IN "
                "(SELECT r.digest FROM manifest_references r JOIN users u ON r.target = u.digest "
                "WHERE r.repo_id = $1 AND r.kind = 'manifest')) ORDER BY name",
                repo_id,
                digest,
            )
            refusal = await t.refuse_deletion(affected, guard, actor, time.time())
            if refusal is not None:
                return refusal
            status = await t.conn.execute(
                "DELETE FROM repository_blobs WHERE repo_id = $1 AND digest = $2", repo_id, digest
            )
            return bool(status != "DELETE 0")

        # The whole repository, as for a manifest deletion: no push may add a user meanwhile.
        return _unless_refused(
            await self._transaction(
                tx, shared=_policy_lock(guard), exclusive=(self._repo_lock(repository),)
            )
        )

    # -- manifests and tags -------------------------------------------------------------------
    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        tags: Sequence[str],
        actor: Actor,
        guard: TagGuard | None = None,
    ) -> PutResult:
        names = list(push_tags(tags))
        digest = manifest.digest
        kinds = [r.kind for r in manifest.references]
        targets = [r.digest for r in manifest.references]

        async def tx(t: _Transaction) -> PutResult | TagRefused:
            repo_id = await t.ensure_repo(repository)
            previous: dict[str, str | None] = {}
            if names or kinds:
                currents, missing, policy = await t.conn.fetchrow(
                    _PUT_CHECK, repo_id, names, kinds, targets
                )
                if names:
                    _check_policy(guard, policy)
                if missing:
                    raise MissingReferences([manifest.references[i - 1] for i in missing])
                previous = dict(zip(names, currents, strict=True))
            now = time.time()
            if guard is not None:
                refusals = [
                    refusal
                    for tag, current in previous.items()
                    if (refusal := guard(tag, current, digest)) is not None
                ]
                if refusals:
                    for refusal in refusals:
                        await t.refused(refusal, actor, now)
                    return TagRefused(*refusals)
            changes = [(tag, current) for tag, current in previous.items() if current != digest]
            actions: list[TagAction] = [
                "created" if current is None else "moved" for _, current in changes
            ]
            await t.conn.execute(
                _PUT_WRITE,
                repo_id,
                manifest.digest,
                manifest.media_type,
                manifest.artifact_type,
                manifest.subject,
                manifest.annotations,
                manifest.size,
                manifest.payload,
                now,
                kinds,
                targets,
                [tag for tag, _ in changes],
                actions,
                repository,
                [current for _, current in changes],
                actor.user,
                actor.address,
                actor.request_id,
            )
            return PutResult(previous)

        locks: dict[str, Sequence[int]] = (
            self._tag_locks(repository, names, guard)
            if names
            else {"shared": (self._repo_lock(repository),)}
        )
        return _unless_refused(await self._transaction(tx, **locks))

    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        return await self._manifests.get((repository, digest))

    async def resolve_tag(self, repository: str, tag: str) -> ManifestRecord | None:
        return await self._tags.get((repository, tag))

    async def _resolve_tags(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ManifestRecord]:
        return await self._lookup(_RESOLVE_TAG, _RESOLVE_TAGS, keys, _manifest)

    async def _get_manifests(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ManifestRecord]:
        return await self._lookup(_GET_MANIFEST, _GET_MANIFESTS, keys, _manifest)

    async def _lookup(
        self,
        one: str,
        many: str,
        keys: Sequence[tuple[str, str]],
        convert: Callable[[Sequence[Any]], V],
    ) -> dict[tuple[str, str], V]:
        """Values by (repository, name) in one query: the coalescers' fetch. ``one`` takes
        the key's two parts as $1 and $2, ``many`` two arrays, and answers each row with the
        key's 1-based position first."""
        if len(keys) == 1:
            row = await self._fetchrow(one, *keys[0])
            return {} if row is None else {keys[0]: convert(row)}
        rows = await self._fetch(many, [k[0] for k in keys], [k[1] for k in keys])
        return {keys[row[0] - 1]: convert(row[1:]) for row in rows}

    async def delete_manifest(
        self, repository: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        async def tx(t: _Transaction) -> bool | Refusal:
            await t.check_policy(guard)
            repo_id = await t.repo_id(repository)
            if repo_id is None:
                return False
            now = time.time()
            # Tags on the manifest, and on indexes that list it: deleting it breaks those too.
            affected = await t.conn.fetch(
                "SELECT name, digest FROM tags WHERE repo_id = $1 AND digest = $2 UNION "
                "SELECT t.name, t.digest FROM manifest_references r JOIN tags t "
                "ON t.repo_id = r.repo_id AND t.digest = r.digest WHERE r.repo_id = $1 "
                "AND r.kind = 'manifest' AND r.target = $2 ORDER BY name",
                repo_id,
                digest,
            )
            if guard is not None:
                refusal = await t.refuse_deletion(affected, guard, actor, now)
                if refusal is not None:
                    return refusal
            exists = await t.conn.fetchval(
                "SELECT true FROM manifests WHERE repo_id = $1 AND digest = $2", repo_id, digest
            )
            if not exists:
                return False
            tags = [tag for tag, tagged in affected if tagged == digest]
            await t.conn.execute(
                f"INSERT INTO tag_events ({_EVENT_FIELDS}) "
                "SELECT $1, tag, 'deleted', $2, NULL, $3, $4, $5, $6, NULL, NULL "
                "FROM unnest($7::text[]) AS tag",
                repository,
                digest,
                now,
                actor.user,
                actor.address,
                actor.request_id,
                tags,
            )
            for table in ("tags", "manifest_references", "manifests"):
                await t.conn.execute(
                    f"DELETE FROM {table} WHERE repo_id = $1 AND digest = $2", repo_id, digest
                )
            return True

        return _unless_refused(
            await self._transaction(
                tx, shared=_policy_lock(guard), exclusive=(self._repo_lock(repository),)
            )
        )

    async def delete_tag(
        self, repository: str, tag: str, actor: Actor, guard: TagGuard | None = None
    ) -> bool:
        async def tx(t: _Transaction) -> bool | Refusal:
            row = await t.conn.fetchrow(
                f"SELECT repo_id, digest, ({_POLICY_VERSION}) FROM tags "
                f"WHERE repo_id = {_REPO_ID.format('$1')} AND name = $2",
                repository,
                tag,
            )
            if row is None:
                return False
            repo_id, current, policy = row
            now = time.time()
            _check_policy(guard, policy)
            refusal = None if guard is None else guard(tag, current, None)
            if refusal is not None:
                return await t.refused(refusal, actor, now)
            await t.conn.execute(
                _DELETE_TAG,
                repo_id,
                tag,
                repository,
                current,
                now,
                actor.user,
                actor.address,
                actor.request_id,
            )
            return True

        locks = self._tag_locks(repository, (tag,), guard)
        return _unless_refused(await self._transaction(tx, **locks))

    async def restore_tag(
        self, repository: str, tag: str, digest: str, actor: Actor, guard: TagGuard | None = None
    ) -> str | None:
        async def tx(t: _Transaction) -> tuple[str | None] | Refusal:
            row = await t.conn.fetchrow(
                "SELECT m.repo_id, (SELECT t.digest FROM tags t WHERE t.repo_id = m.repo_id "
                f"AND t.name = $3), ({_POLICY_VERSION}) FROM manifests m "
                f"WHERE m.repo_id = {_REPO_ID.format('$1')} AND m.digest = $2",
                repository,
                digest,
                tag,
            )
            if row is None:
                raise ManifestNotFound(f"{repository}@{digest}")
            repo_id, current, policy = row
            now = time.time()
            _check_policy(guard, policy)
            refusal = None if guard is None else guard(tag, current, digest)
            if refusal is not None:
                return await t.refused(refusal, actor, now)
            if current != digest:
                await t.conn.execute(
                    _POINT_TAG,
                    repo_id,
                    tag,
                    digest,
                    now,
                    repository,
                    "restored",
                    current,
                    actor.user,
                    actor.address,
                    actor.request_id,
                )
            return (current,)

        result = await self._transaction(tx, **self._tag_locks(repository, (tag,), guard))
        return _unless_refused(result)[0]

    async def repository_exists(self, repository: str) -> bool:
        if repository in self._repo_ids:
            return True
        return await self._fetchrow(_SELECT_REPO, repository) is not None

    async def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        rows = await self._fetch(
            f"SELECT name FROM tags WHERE repo_id = {_REPO_ID.format('$1')} AND name > $2 "
            "ORDER BY name LIMIT $3",
            repository,
            last or "",
            limit,
        )
        return [row[0] for row in rows]

    async def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        rows = await self._fetch(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
            last or "",
            limit,
        )
        return [row[0] for row in rows]

    async def referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[ReferrerRecord]:
        sql = (
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests "
            f"WHERE repo_id = {_REPO_ID.format('$1')} AND subject = $2"
        )
        args: tuple[object, ...] = (repository, subject)
        if artifact_type is not None:
            sql += " AND artifact_type = $3"
            args += (artifact_type,)
        rows = await self._fetch(sql + " ORDER BY digest", *args)
        return [ReferrerRecord(*row) for row in rows]

    # -- tag history --------------------------------------------------------------------------
    async def _events(self, where: str, *args: object) -> list[TagEvent]:
        rows = await self._fetch(f"SELECT id, {_EVENT_FIELDS} FROM tag_events WHERE {where}", *args)
        return [TagEvent(*row) for row in rows]

    async def tag_history(
        self, repository: str, tag: str, limit: int | None, before: int | None
    ) -> list[TagEvent]:
        return await self._events(
            "repository = $1 AND tag = $2 AND id < $3 ORDER BY id DESC LIMIT $4",
            repository,
            tag,
            before or 2**62,
            limit,
        )

    async def tag_at(self, repository: str, tag: str, before: float) -> TagEvent | None:
        events = await self._events(
            "repository = $1 AND tag = $2 AND at < $3 AND action <> 'refused' "
            "ORDER BY id DESC LIMIT 1",
            repository,
            tag,
            before,
        )
        return events[0] if events else None

    async def digest_events(self, digest: str) -> list[TagEvent]:
        # As in SQLite: the changes that pointed a tag at the digest (indexed), and for each,
        # the tag's next change, which pointed it away (found through the tag index).
        rows = await self._fetch(_DIGEST_EVENTS, digest)
        return [TagEvent(*row) for row in rows]

    # -- tag policy ---------------------------------------------------------------------------
    async def policy_version(self) -> int:
        row = await self._fetchrow("SELECT version FROM policy WHERE id = 1")
        return 0 if row is None else int(row[0])

    async def get_policy(self) -> PolicyRecord | None:
        row = await self._fetchrow(
            'SELECT document, version, source, source_hash, updated_at, "user", address '
            "FROM policy WHERE id = 1"
        )
        return None if row is None else PolicyRecord(*row)

    async def set_policy(
        self, document: str, actor: Actor, source: str, source_hash: str | None
    ) -> int:
        async def tx(t: _Transaction) -> int:
            row = await t.conn.fetchrow("SELECT document, version FROM policy WHERE id = 1")
            old, version = (None, 0) if row is None else (row[0], int(row[1]))
            await t.conn.execute(
                _SET_POLICY,
                document,
                version + 1,
                source,
                source_hash,
                time.time(),
                actor.user,
                actor.address,
                actor.request_id,
                old,
            )
            return version + 1

        return await self._transaction(tx, exclusive=(_POLICY_LOCK,))

    async def policy_changes(self, limit: int | None) -> list[PolicyChange]:
        rows = await self._fetch(
            'SELECT id, at, "user", address, request_id, source, old_document, new_document '
            "FROM policy_changes ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [PolicyChange(*row) for row in rows]

    # -- admission pins ------------------------------------------------------------------------
    async def record_pins(self, pins: Sequence[PinRecord]) -> None:
        if not pins:
            return
        rows = [
            (
                p.at, p.namespace, p.kind, p.name, p.container_kind, p.container, p.image,
                p.repository, p.tag, p.digest, p.source, p.request_uid, p.user,
            )
            for p in pins
        ]  # fmt: skip
        columns = [list(column) for column in zip(*rows, strict=True)]
        arrays = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(_PIN_TYPES))
        # One statement, so the rows go in together, with ids in the order given.
        await self._change(
            f"INSERT INTO pins ({_PIN_FIELDS}) SELECT * FROM unnest({arrays})", *columns
        )

    async def list_pins(
        self,
        namespace: str | None,
        repository: str | None,
        tag: str | None,
        limit: int | None,
        before: int | None,
    ) -> list[PinRecord]:
        where = ["id < $1"]
        args: list[object] = [before or 2**62]
        for column, value in (("namespace", namespace), ("repository", repository), ("tag", tag)):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        args.append(limit)
        rows = await self._fetch(
            f"SELECT {_PIN_FIELDS}, id FROM pins WHERE {' AND '.join(where)} "
            f"ORDER BY id DESC LIMIT ${len(args)}",
            *args,
        )
        return [PinRecord(*row) for row in rows]

    # -- uploads ------------------------------------------------------------------------------
    async def create_upload(self, upload: Upload) -> None:
        await self._change(
            f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            upload.id,
            upload.repository,
            upload.offset,
            upload.hash_state,
            upload.created_at,
            upload.updated_at,
            upload.lease_until,
            upload.lease_owner,
        )

    async def get_upload(self, upload_id: str, repository: str) -> Upload | None:
        row = await self._fetchrow(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND repository = $2",
            upload_id,
            repository,
        )
        return None if row is None else _upload(row)

    async def acquire_upload(
        self,
        upload_id: str,
        repository: str,
        offset: int | None,
        now: float,
        lease: float,
        owner: str = "",
        take_over: float | None = None,
    ) -> Upload:
        for _ in range(100):
            # One compare-and-set: among racers, the row lock makes each later one re-check
            # the condition against the winner's lease.
            row = await self._fetchrow(
                "UPDATE uploads SET lease_until = $3 + $4, lease_owner = $6 "
                "WHERE id = $1 AND repository = $2 "
                "AND (lease_until <= $3 OR lease_until = $7::double precision) "
                'AND ($5::bigint IS NULL OR "offset" = $5) '
                f"RETURNING {_UPLOAD_COLUMNS}",
                upload_id,
                repository,
                now,
                lease,
                offset,
                owner,
                take_over,
            )
            if row is not None:
                return _upload(row)
            upload = await self.get_upload(upload_id, repository)
            if upload is None:
                raise UploadNotFound(upload_id)
            if upload.lease_until > now and upload.lease_until != take_over:
                raise UploadBusy(upload_id, upload.lease_owner, upload.lease_until)
            if offset is not None and offset != upload.offset:
                raise UploadOffsetMismatch(upload.offset)
            # Released between the two statements: try again.
        raise UploadBusy(upload_id)

    async def renew_upload(
        self, upload_id: str, lease_until: float, new_lease_until: float
    ) -> bool:
        return await self._change(
            "UPDATE uploads SET lease_until = $1 WHERE id = $2 AND lease_until = $3",
            new_lease_until,
            upload_id,
            lease_until,
        )

    async def checkpoint_upload(
        self,
        upload_id: str,
        lease_until: float,
        offset: int,
        hash_state: bytes | None,
        now: float,
    ) -> bool:
        return await self._change(
            'UPDATE uploads SET "offset" = $1, hash_state = $2, updated_at = $3 '
            "WHERE id = $4 AND lease_until = $5",
            offset,
            hash_state,
            now,
            upload_id,
            lease_until,
        )

    async def release_upload(
        self,
        upload_id: str,
        lease_until: float,
        offset: int,
        hash_state: bytes | None,
        now: float,
    ) -> bool:
        return await self._change(
            'UPDATE uploads SET "offset" = $1, hash_state = $2, updated_at = $3, '
            "lease_until = 0, lease_owner = '' WHERE id = $4 AND lease_until = $5",
            offset,
            hash_state,
            now,
            upload_id,
            lease_until,
        )

    async def delete_upload(self, upload_id: str) -> None:
        await self._change("DELETE FROM uploads WHERE id = $1", upload_id)

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        rows = await self._fetch(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE updated_at < $1 AND lease_until < $2",
            updated_before,
            time.time(),
        )
        return [_upload(row) for row in rows]
