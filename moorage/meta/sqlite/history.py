"""Tag history in SQLite, kept as chains so that recording an event costs one appended row.

Every event links to the previous event of its tag (``tag_previous``); an event that points a
tag at a digest (created, moved, restored) also links to the previous such event of that
digest in its repository (``digest_previous``). The newest event of a chain, its head, lives
in the row the change writes anyway: ``tags.last_event`` for a tag and
``manifests.last_event`` for a digest. When that row is deleted (a deleted tag or manifest),
the head moves to ``history_heads``, so the chain goes on if the tag or manifest comes back.
A head in ``history_heads`` may be older than the live row's; the live row wins, and walking
both finds the same chain.

So a tag write touches no index of the history at all: an index on (repository, tag) and on
the new digest would each put a random B-tree page into every commit. Queries walk a chain
instead of an index, one rowid lookup per event, newest first.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections import defaultdict
from collections.abc import Sequence

from moorage.meta.rows import EVENT_COLUMNS, EVENT_FIELDS, event_values, tag_event
from moorage.meta.sqlite.database import Database
from moorage.meta.tag_changes import Event
from moorage.model import TagAction, TagEvent

_COLUMNS = ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
_NAMES = [column.strip().strip('"') for column in EVENT_FIELDS.split(",")]

# The newest event of a tag's chain, or of a digest's in a repository (:digest NULL: none):
# from the live row, or else as saved when that row went.
_TAG_HEAD = (
    "coalesce((SELECT last_event FROM tags WHERE repo_id = :repo_id AND name = :tag), "
    "(SELECT last_event FROM history_heads WHERE kind = 'tag' AND key = :tag "
    "AND repository = :repository))"
)
_DIGEST_HEAD = (
    "coalesce((SELECT last_event FROM manifests WHERE repo_id = :repo_id AND digest = :digest), "
    "(SELECT last_event FROM history_heads WHERE kind = 'digest' AND key = :digest "
    "AND repository = :repository))"
)
# One statement per event, as it runs for every tag change: the row and both links.
_INSERT = (
    f"INSERT INTO tag_events ({EVENT_FIELDS}, tag_previous, digest_previous) VALUES "
    f"({', '.join(':' + name for name in _NAMES)}, {_TAG_HEAD}, {_DIGEST_HEAD})"
)
_HEADS = f"SELECT {_TAG_HEAD}"
_SAVE_HEAD = (
    "INSERT INTO history_heads (kind, key, repository, last_event) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (kind, key, repository) DO UPDATE SET last_event = excluded.last_event"
)
# One chain, newest first, from a start event: at most ``limit`` events (-1: all), the walk
# stopping below ``floor``.
_TAG_CHAIN = (
    "WITH RECURSIVE chain(id) AS (SELECT ? UNION ALL SELECT e.tag_previous FROM tag_events e "
    "JOIN chain c ON e.id = c.id WHERE e.tag_previous > ? LIMIT ?) "
    f"SELECT {_COLUMNS} FROM chain c JOIN tag_events e ON e.id = c.id"
)
# The ids of a tag's changes (refusals aside) above a floor, ascending: from its head down.
_TAG_CHANGES = (
    "WITH RECURSIVE chain(id) AS (SELECT ?1 UNION ALL SELECT e.tag_previous FROM tag_events e "
    "JOIN chain c ON e.id = c.id WHERE e.tag_previous > ?2) "
    "SELECT c.id FROM chain c JOIN tag_events e ON e.id = c.id "
    "WHERE e.action != 'refused' ORDER BY c.id"
)
_DIGEST_HEADS = (
    "SELECT m.last_event FROM repositories r JOIN manifests m ON m.repo_id = r.id "
    "AND m.digest = ?1 WHERE m.last_event IS NOT NULL "
    "UNION SELECT last_event FROM history_heads WHERE kind = 'digest' AND key = ?1"
)
_DIGEST_CHAINS = (
    f"WITH RECURSIVE chain(id) AS ({_DIGEST_HEADS} UNION SELECT e.digest_previous "
    "FROM tag_events e JOIN chain c ON e.id = c.id WHERE e.digest_previous IS NOT NULL) "
    f"SELECT {_COLUMNS} FROM chain c JOIN tag_events e ON e.id = c.id"
)
_POINTING: frozenset[TagAction] = frozenset({"created", "moved", "restored"})


def tag_head(
    conn: sqlite3.Connection, repo_id: int | None, repository: str, tag: str
) -> int | None:
    """The newest event of the tag's chain."""
    args = {"repo_id": repo_id, "tag": tag, "repository": repository}
    head: int | None = conn.execute(_HEADS, args).fetchone()[0]
    return head


def record(conn: sqlite3.Connection, repo_id: int, event: Event) -> int:
    """Append an event to its chains and return its id. Run it before the change itself; the
    caller then makes the event the head of its tag (``tags.last_event``, or
    ``advance_tag_head``) and, when it points the tag at its new digest, of that manifest."""
    args = dict(zip(_NAMES, event_values(event), strict=True))
    args["repo_id"] = repo_id
    args["digest"] = event.new_digest if event.action in _POINTING else None
    cursor = conn.execute(_INSERT, args)
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def advance_tag_head(
    conn: sqlite3.Connection, repo_id: int, repository: str, tag: str, event: int
) -> None:
    """Make ``event`` the tag's head: in its row, or saved if the tag has no row (deleted)."""
    cursor = conn.execute(
        "UPDATE tags SET last_event = ? WHERE repo_id = ? AND name = ?", (event, repo_id, tag)
    )
    if cursor.rowcount == 0:
        conn.execute(_SAVE_HEAD, ("tag", tag, repository, event))


def delete_tags(conn: sqlite3.Connection, repo_id: int, events: Sequence[Event]) -> None:
    """Delete the tag of each event (deleted), recording it; its history goes on."""
    for event in events:
        event_id = record(conn, repo_id, event)
        conn.execute("DELETE FROM tags WHERE repo_id = ? AND name = ?", (repo_id, event.tag))
        advance_tag_head(conn, repo_id, event.repository, event.tag, event_id)


def save_digest_head(conn: sqlite3.Connection, repo_id: int, repository: str, digest: str) -> None:
    """Keep the manifest's head before its row is deleted."""
    row = conn.execute(
        "SELECT last_event FROM manifests WHERE repo_id = ? AND digest = ?", (repo_id, digest)
    ).fetchone()
    if row is not None and row[0] is not None:
        conn.execute(_SAVE_HEAD, ("digest", digest, repository, row[0]))


def _events(rows: sqlite3.Cursor) -> list[TagEvent]:
    return [tag_event(row) for row in rows]


def _tag_events(
    conn: sqlite3.Connection,
    repo_id: int | None,
    repository: str,
    tag: str,
    limit: int | None,
    before: int | None,
) -> list[TagEvent]:
    """The tag's events, newest first: ``limit`` of them, older than event ``before``."""
    bound = -1 if limit is None else limit
    cursor = None
    if before is not None:
        cursor = conn.execute(
            "SELECT tag_previous FROM tag_events WHERE id = ? AND repository = ? AND tag = ?",
            (before, repository, tag),
        ).fetchone()
    if cursor is not None:
        start = cursor[0]  # the usual cursor: the last event of the previous page
    else:
        start = tag_head(conn, repo_id, repository, tag)
        if before is not None:  # not one of this tag's events: walk it all, keep the older
            rows = conn.execute(_TAG_CHAIN + " ORDER BY e.id DESC", (start, 0, -1))
            return [e for e in _events(rows) if e.id < before][: None if limit is None else limit]
    if start is None or limit == 0:
        return []
    return _events(conn.execute(_TAG_CHAIN + " ORDER BY e.id DESC", (start, 0, bound)))


def _tag_at(
    conn: sqlite3.Connection, repo_id: int | None, repository: str, tag: str, before: float
) -> TagEvent | None:
    """The tag's newest change (refusals aside) made before the time ``before``."""
    start = tag_head(conn, repo_id, repository, tag)
    if start is None:
        return None
    row = conn.execute(
        _TAG_CHAIN + " WHERE e.at < ? AND e.action != 'refused' ORDER BY e.id DESC LIMIT 1",
        (start, 0, -1, before),
    ).fetchone()
    return None if row is None else tag_event(row)


def _digest_events(conn: sqlite3.Connection, digest: str) -> list[TagEvent]:
    """Every change that pointed a tag at ``digest``, in any repository, and each such tag's
    next change (which pointed it away), oldest first."""
    pointed = _events(conn.execute(_DIGEST_CHAINS, (digest,)))
    by_tag: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in pointed:
        by_tag[(event.repository, event.tag)].append(event.id)
    following: set[int] = set()
    for (repository, tag), ids in by_tag.items():
        row = conn.execute("SELECT id FROM repositories WHERE name = ?", (repository,)).fetchone()
        head = tag_head(conn, None if row is None else row[0], repository, tag)
        # The ids of the tag's changes after its oldest pointing at the digest, ascending.
        later = [r[0] for r in conn.execute(_TAG_CHANGES, (head, min(ids)))]
        for event_id in ids:
            index = bisect.bisect_right(later, event_id)
            if index < len(later):
                following.add(later[index])
    following -= {e.id for e in pointed}
    if following:
        marks = ", ".join("?" * len(following))
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM tag_events WHERE id IN ({marks})", [*following]
        )
        pointed.extend(_events(rows))
    return sorted(pointed, key=lambda e: e.id)


class History(Database):
    """The history queries of the store (``ManifestStore``), over the chains."""

    async def tag_history(
        self, repository: str, tag: str, limit: int | None, before: int | None
    ) -> list[TagEvent]:
        return _tag_events(self._reader, self._repo_id(repository), repository, tag, limit, before)

    async def tag_at(self, repository: str, tag: str, before: float) -> TagEvent | None:
        return _tag_at(self._reader, self._repo_id(repository), repository, tag, before)

    async def digest_events(self, digest: str) -> list[TagEvent]:
        return _digest_events(self._reader, digest)
