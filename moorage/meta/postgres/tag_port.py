"""PostgreSQL's side of the guarded tag changes (``moorage.meta.tag_changes``): the locks each
change takes, and its SQL.

**Locks.** Each change runs in one transaction (``Database._transaction``) holding
transaction-scoped advisory locks, taken in the statement that opens it:

- a change to tags (a push with tags, a tag deletion, a restore) takes an exclusive lock on
  the hash of (repository, tag), for each tag in ascending order of lock key, and a *shared*
  lock on the repository's hash. Its next statement reads the tags' current digests; the
  guard decides on them; the change (or the refusals' history rows) commits before the locks
  are released. So pushes racing for one new immutable tag queue on the lock, and each later
  one reads the winner's digest and is refused. A row that does not exist yet cannot be
  locked with ``SELECT ... FOR UPDATE``; a lock on the name can. Taking the locks in one
  order keeps two pushes naming the same tags in different orders from deadlocking;
- a push without a tag takes the shared repository lock (its check that the child manifests
  exist must not race a manifest deletion);
- a manifest deletion, or a guarded blob unlink, takes the repository lock *exclusively*: it
  must see every tag on the manifests concerned and on the indexes listing them, with no push
  adding one meanwhile. Deletions are rare; pushes to different tags of one repository still
  run in parallel;
- every change a guard judges takes the policy lock *shared* (a policy change takes it
  exclusively): the guard's policy version is read in the transaction, and no policy change
  can commit until the transaction has.

**Round trips.** A push with tags is four, however many tags it names: BEGIN with the locks
(one simple query), one statement reading the tags' current digests together with the
missing references and the policy version (``read_push``), one statement writing manifest,
references, tags and history (``write_push``: data-modifying CTEs over arrays), and COMMIT.
The other changes read what they need in one statement too.

Tag history ids come from an identity column; since a tag's events are written under the
tag's lock, its ids grow in commit order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from moorage.meta.errors import TagRefused
from moorage.meta.postgres.database import (
    POLICY_LOCK,
    Clock,
    Database,
    Transaction,
    lock_key,
    rowcount,
)
from moorage.meta.rows import EVENT_FIELDS, MANIFEST_FIELDS, event_values, manifest_values
from moorage.meta.tag_changes import (
    DeletionState,
    Event,
    PushState,
    TagState,
    unless_refused,
)
from moorage.model import ManifestRecord, Reference, TagGuard

T = TypeVar("T")

_EVENT_TYPES = ("text",) * 5 + ("float8",) + ("text",) * 5
_POLICY_VERSION = "(SELECT version FROM policy WHERE id = 1)"


def _insert_events(first: int) -> str:
    """An INSERT of events given as one array per column of ``EVENT_FIELDS`` (in that order,
    from parameter ``$first`` on), keeping their order."""
    names = [f"c{i}" for i in range(len(_EVENT_TYPES))]
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(_EVENT_TYPES))
    return (
        f"INSERT INTO tag_events ({EVENT_FIELDS}) SELECT {', '.join(names)} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS e ({', '.join(names)}, ord) ORDER BY ord"
    )


def _event_arrays(events: Sequence[Event]) -> list[list[object]]:
    rows = [event_values(event) for event in events]
    return [[row[i] for row in rows] for i in range(len(_EVENT_TYPES))]


# read_push: the current digest of each tag ($2, in order; NULL for a new tag), the (1-based)
# positions of missing references, and the stored policy's version.
_READ_PUSH = f"""
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
       {_POLICY_VERSION}
"""
# write_push: the manifest ($1-$9, $9 the time), its references ($10, $11), and for each event
# its tag ($12), action ($13) and old digest ($15), in order; the rest of every event's fields
# are the push's: the repository ($14), the manifest, the time, the actor ($16-$18).
_WRITE_PUSH = f"""
WITH manifest AS (
    INSERT INTO manifests ({MANIFEST_FIELDS})
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
INSERT INTO tag_events ({EVENT_FIELDS})
SELECT $14, c.name, c.action, c.old, $2, $9, $16, $17, $18, NULL, NULL
FROM unnest($12::text[], $13::text[], $15::text[]) WITH ORDINALITY AS c (name, action, old, ord)
ORDER BY c.ord
"""
# The tag ($3), its digest ($6) and time ($7) of each event from $2 on; the repository is $1.
_POINT_TAGS = f"""
WITH tag AS (
    INSERT INTO tags (repo_id, name, digest, updated_at)
    SELECT $1, t.name, t.digest, t.at FROM unnest($3::text[], $6::text[], $7::float8[])
        AS t (name, digest, at)
    ON CONFLICT (repo_id, name) DO UPDATE
        SET digest = excluded.digest, updated_at = excluded.updated_at
)
{_insert_events(2)}
"""
_DELETE_TAGS = f"""
WITH tag AS (DELETE FROM tags WHERE repo_id = $1 AND name = ANY($3::text[]))
{_insert_events(2)}
"""
_READ_TAG = f"""
SELECT r.id,
       (SELECT digest FROM tags WHERE repo_id = r.id AND name = $2),
       EXISTS (SELECT 1 FROM manifests WHERE repo_id = r.id AND digest = $3),
       {_POLICY_VERSION}
FROM (SELECT (SELECT id FROM repositories WHERE name = $1) AS id) r
"""
# Deletions ($1 the repository's id, $2 the digest): the tags affected, by name, whether
# there is anything to delete, and the policy version.
_AFFECTED = f"""
SELECT ARRAY(SELECT name FROM affected ORDER BY name),
       ARRAY(SELECT digest FROM affected ORDER BY name),
       EXISTS (SELECT 1 FROM {{table}} WHERE repo_id = $1 AND digest = $2),
       {_POLICY_VERSION}
"""
# Tags on a manifest, and on indexes that list it: deleting it breaks those too.
_READ_MANIFEST_DELETION = """
WITH affected AS (
    SELECT name, digest FROM tags WHERE repo_id = $1 AND digest = $2
    UNION
    SELECT t.name, t.digest FROM manifest_references r JOIN tags t
        ON t.repo_id = r.repo_id AND t.digest = r.digest
    WHERE r.repo_id = $1 AND r.kind = 'manifest' AND r.target = $2
)""" + _AFFECTED.format(table="manifests")
# Tags on manifests using a blob, and on indexes listing such manifests (if $3).
_READ_BLOB_UNLINK = """
WITH users AS (
    SELECT digest FROM manifest_references
    WHERE $3::boolean AND repo_id = $1 AND kind = 'blob' AND target = $2
), affected AS (
    SELECT name, digest FROM tags WHERE repo_id = $1 AND (
        digest IN (SELECT digest FROM users) OR digest IN (
            SELECT r.digest FROM manifest_references r JOIN users u ON r.target = u.digest
            WHERE r.repo_id = $1 AND r.kind = 'manifest'))
)""" + _AFFECTED.format(table="repository_blobs")
_RECORD = _insert_events(1)
UNLINK_BLOB = "DELETE FROM repository_blobs WHERE repo_id = $1 AND digest = $2"


async def delete_tags(t: Transaction, repo_id: int, events: Sequence[Event]) -> None:
    """Delete the tag of each event (deleted), recording it."""
    if events:
        await t.conn.execute(_DELETE_TAGS, repo_id, *_event_arrays(events))


class PostgresTagPort:
    """The port of one operation, in its transaction (see the module docstring)."""

    __slots__ = ("_clock", "_repo_id", "_t")

    def __init__(self, t: Transaction, clock: Clock) -> None:
        self._t = t
        self._clock = clock
        self._repo_id: int | None = None

    def now(self) -> float:
        return self._clock()

    async def read_push(
        self,
        repository: str,
        tags: Sequence[str],
        references: Sequence[Reference],
        policy: bool = True,
    ) -> PushState:
        # The version comes with the tags and references in one query: reading it costs
        # nothing more, so ``policy`` changes nothing here.
        repo_id = self._repo_id = await self._t.ensure_repo(repository, self._clock())
        if not tags and not references:
            return PushState(0, (), ())
        kinds, targets = [r.kind for r in references], [r.digest for r in references]
        current, missing, version = await self._t.conn.fetchrow(
            _READ_PUSH, repo_id, list(tags), kinds, targets
        )
        return PushState(version or 0, current, [references[i - 1] for i in missing])

    async def write_push(
        self, repository: str, manifest: ManifestRecord, events: Sequence[Event], now: float
    ) -> None:
        # The events of a push differ only in their tag, action and old digest: those go as
        # arrays, the rest once (as fewer arrays, the statement costs the client less).
        references = manifest.references
        actor = events[0].actor if events else None
        await self._t.conn.execute(
            _WRITE_PUSH,
            self._repo_id,
            *manifest_values(manifest),
            now,
            [r.kind for r in references],
            [r.digest for r in references],
            [event.tag for event in events],
            [event.action for event in events],
            repository,
            [event.old_digest for event in events],
            *(
                (None, None, None)
                if actor is None
                else (actor.user, actor.address, actor.request_id)
            ),
        )

    async def read_tag(self, repository: str, tag: str, manifest: str | None = None) -> TagState:
        row = await self._t.conn.fetchrow(_READ_TAG, repository, tag, manifest)
        self._repo_id, current, found, version = row
        return TagState(version or 0, current, found)

    async def delete_tag(self, event: Event) -> None:
        await self._write_events(_DELETE_TAGS, [event])

    async def point_tag(self, event: Event) -> None:
        await self._write_events(_POINT_TAGS, [event])

    async def read_manifest_deletion(self, repository: str, digest: str) -> DeletionState:
        return await self._read_deletion(_READ_MANIFEST_DELETION, repository, digest)

    async def delete_manifest(self, repository: str, digest: str, events: Sequence[Event]) -> None:
        await self._write_events(_DELETE_TAGS, events)
        for table in ("manifest_references", "manifests", "manifest_pulls"):
            await self._t.conn.execute(
                f"DELETE FROM {table} WHERE repo_id = $1 AND digest = $2", self._repo_id, digest
            )

    async def read_blob_unlink(self, repository: str, digest: str, affected: bool) -> DeletionState:
        return await self._read_deletion(_READ_BLOB_UNLINK, repository, digest, affected)

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        return rowcount(await self._t.conn.execute(UNLINK_BLOB, self._repo_id, digest)) > 0

    async def record(self, events: Sequence[Event]) -> None:
        await self._t.conn.execute(_RECORD, *_event_arrays(events))

    async def _read_deletion(self, sql: str, repository: str, *args: object) -> DeletionState:
        repo_id = self._repo_id = await self._t.repo_id(repository)
        names, digests, found, version = await self._t.conn.fetchrow(sql, repo_id, *args)
        return DeletionState(version or 0, found, list(zip(names, digests, strict=True)))

    async def _write_events(self, sql: str, events: Sequence[Event]) -> None:
        await self._t.conn.execute(sql, self._repo_id, *_event_arrays(events))


def _policy_lock(guard: TagGuard | None) -> tuple[int, ...]:
    return () if guard is None or guard.policy_version is None else (POLICY_LOCK,)


class GuardedChanges(Database):
    async def _guarded(
        self,
        operation: Callable[[PostgresTagPort], Awaitable[T | TagRefused]],
        *,
        shared: Sequence[int] = (),
        exclusive: Sequence[int] = (),
    ) -> T:
        """Run a guarded change in a transaction holding the given locks, and raise its
        refusals once they are committed."""
        clock = self._clock

        async def tx(t: Transaction) -> T | TagRefused:
            return await operation(PostgresTagPort(t, clock))

        return unless_refused(await self._transaction(tx, shared=shared, exclusive=exclusive))

    @staticmethod
    def _repository_locks(repository: str, guard: TagGuard | None) -> dict[str, Sequence[int]]:
        """The locks of a change to a whole repository: it exclusively (and the policy shared,
        for a guarded change)."""
        return {"shared": _policy_lock(guard), "exclusive": (lock_key("repository", repository),)}

    @staticmethod
    def _tag_locks(
        repository: str, tags: Sequence[str], guard: TagGuard | None
    ) -> dict[str, Sequence[int]]:
        """The locks of a change to ``tags``: the repository (and the policy, for a guarded
        change) shared, and each tag exclusively, in ascending order of key. With no tags,
        the repository shared."""
        if not tags:
            return {"shared": (lock_key("repository", repository),)}
        return {
            "shared": (lock_key("repository", repository), *_policy_lock(guard)),
            "exclusive": sorted({lock_key("tag", repository, tag) for tag in tags}),
        }
