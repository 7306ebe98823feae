"""Rows and records, for every backend: the column lists the backends select and insert
(the tables have the same columns in SQLite and PostgreSQL), and the mapping of a row, in
that column order, to its record.

Columns that are SQL keywords are double-quoted (``"user"``, ``"offset"``), which both
dialects read as the column's name. A row is anything indexable: a ``sqlite3`` tuple or an
``asyncpg.Record``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moorage.meta.tag_changes import Event
from moorage.model import (
    ManifestRecord,
    PinRecord,
    PolicyChange,
    PolicyRecord,
    ReferrerRecord,
    RepositoryUsage,
    TagEvent,
    Upload,
    UsageCount,
)

Row = Sequence[Any]

# -- manifests ----------------------------------------------------------------------------------
#: A manifest as read back, from the table under the alias ``m``.
MANIFEST_COLUMNS = "m.digest, m.media_type, m.payload, m.artifact_type, m.subject, m.annotations"
REFERRER_COLUMNS = "digest, media_type, size, artifact_type, annotations"


def manifest_record(row: Row) -> ManifestRecord:
    return ManifestRecord(
        digest=row[0],
        media_type=row[1],
        payload=bytes(row[2]),
        artifact_type=row[3],
        subject=row[4],
        annotations=row[5],
    )


#: The columns of a stored manifest: its repository, ``manifest_values`` and its time.
MANIFEST_FIELDS = (
    "repo_id, digest, media_type, artifact_type, subject, annotations, size, payload, created_at"
)


def manifest_values(manifest: ManifestRecord) -> tuple[object, ...]:
    """A manifest in the order of ``MANIFEST_FIELDS``, between the repository and the time."""
    return (
        manifest.digest,
        manifest.media_type,
        manifest.artifact_type,
        manifest.subject,
        manifest.annotations,
        manifest.size,
        manifest.payload,
    )


def referrer_record(row: Row) -> ReferrerRecord:
    return ReferrerRecord(*row)


# -- tag history --------------------------------------------------------------------------------
EVENT_FIELDS = (
    'repository, tag, action, old_digest, new_digest, at, "user", address, request_id, rule, reason'
)
EVENT_COLUMNS = f"id, {EVENT_FIELDS}"


def event_values(event: Event) -> tuple[object, ...]:
    """An event in the order of ``EVENT_FIELDS``."""
    actor = event.actor
    return (
        event.repository,
        event.tag,
        event.action,
        event.old_digest,
        event.new_digest,
        event.at,
        actor.user,
        actor.address,
        actor.request_id,
        event.rule,
        event.reason,
    )


def tag_event(row: Row) -> TagEvent:
    """A row of ``EVENT_COLUMNS``."""
    return TagEvent(*row)


# -- policy -------------------------------------------------------------------------------------
POLICY_COLUMNS = 'document, version, source, source_hash, updated_at, "user", address'
POLICY_CHANGE_COLUMNS = 'id, at, "user", address, request_id, source, old_document, new_document'
POLICY_CHANGE_FIELDS = POLICY_CHANGE_COLUMNS.removeprefix("id, ")


def policy_record(row: Row) -> PolicyRecord:
    return PolicyRecord(*row)


def policy_change(row: Row) -> PolicyChange:
    return PolicyChange(*row)


# -- pins ---------------------------------------------------------------------------------------
PIN_FIELDS = (
    "at, namespace, kind, name, container_kind, container, image, repository, tag, digest, "
    'source, request_uid, "user"'
)
PIN_COLUMNS = f"{PIN_FIELDS}, id"


def pin_values(pin: PinRecord) -> tuple[object, ...]:
    """A pin in the order of ``PIN_FIELDS``."""
    return (
        pin.at, pin.namespace, pin.kind, pin.name, pin.container_kind, pin.container, pin.image,
        pin.repository, pin.tag, pin.digest, pin.source, pin.request_uid, pin.user,
    )  # fmt: skip


def pin_record(row: Row) -> PinRecord:
    """A row of ``PIN_COLUMNS``."""
    return PinRecord(*row)


def pin_filters(
    namespace: str | None, repository: str | None, tag: str | None
) -> list[tuple[str, str]]:
    """The filters of a pin listing that are given, as (column, value), to be ANDed."""
    filters = (("namespace", namespace), ("repository", repository), ("tag", tag))
    return [(column, value) for column, value in filters if value is not None]


# -- uploads ------------------------------------------------------------------------------------
UPLOAD_COLUMNS = (
    'id, repository, "offset", hash_state, created_at, updated_at, lease_until, lease_owner, digest'
)


def upload_values(upload: Upload) -> tuple[object, ...]:
    """An upload in the order of ``UPLOAD_COLUMNS``."""
    return (
        upload.id,
        upload.repository,
        upload.offset,
        upload.hash_state,
        upload.created_at,
        upload.updated_at,
        upload.lease_until,
        upload.lease_owner,
        upload.digest,
    )


def upload_record(row: Row) -> Upload:
    return Upload(*row)


# -- usage per repository -----------------------------------------------------------------------
#: What a flush adds to one repository: its name, then ``repository_usage``'s columns.
UsageRow = tuple[str, int, int, float | None, float | None]


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def usage_values(counts: Sequence[UsageCount]) -> list[UsageRow]:
    """What ``counts`` add to ``repository_usage``, as (name, pulls, pushes, last_pull,
    last_push): one row per repository (a repository named twice has its counts added), in
    the order of names, so that concurrent flushes update rows in one order."""
    merged: dict[str, UsageRow] = {}
    for count in counts:
        name, pulls, pushes, last_pull, last_push = merged.get(
            count.repository, (count.repository, 0, 0, None, None)
        )
        merged[count.repository] = (
            name,
            pulls + count.pulls,
            pushes + count.pushes,
            _later(last_pull, count.last_pull),
            _later(last_push, count.last_push),
        )
    return [merged[name] for name in sorted(merged)]


def manifest_pull_values(counts: Sequence[UsageCount]) -> list[tuple[str, str, int, float]]:
    """What ``counts`` add to ``manifest_pulls``, as (name, digest, pulls, last_pull): one row
    per manifest, in the order of (name, digest)."""
    merged: dict[tuple[str, str], tuple[int, float]] = {}
    for count in counts:
        for pulled in count.manifests:
            key = (count.repository, pulled.digest)
            pulls, last = merged.get(key, (0, pulled.last_pull))
            merged[key] = (pulls + pulled.pulls, max(last, pulled.last_pull))
    return [(*key, *merged[key]) for key in sorted(merged)]


#: The usage report of the repositories ``{where}`` selects, one row each (``repository_usage``),
#: in both backends' SQL: a blob is "shared" when another repository links it too.
USAGE_REPORT = """
WITH r AS MATERIALIZED (SELECT id, name FROM repositories WHERE {where}),
m AS (
    SELECT repo_id, count(*) AS n, sum(size) AS bytes FROM manifests
    WHERE repo_id IN (SELECT id FROM r) GROUP BY repo_id
),
t AS (
    SELECT repo_id, count(*) AS n FROM tags WHERE repo_id IN (SELECT id FROM r) GROUP BY repo_id
),
l AS (
    SELECT l.repo_id, b.size, EXISTS (
        SELECT 1 FROM repository_blobs o WHERE o.digest = l.digest AND o.repo_id <> l.repo_id
    ) AS shared
    FROM repository_blobs l JOIN blobs b ON b.digest = l.digest
    WHERE l.repo_id IN (SELECT id FROM r)
),
b AS (
    SELECT repo_id, count(*) AS n,
        sum(CASE WHEN shared THEN 0 ELSE size END) AS own,
        sum(CASE WHEN shared THEN size ELSE 0 END) AS shared
    FROM l GROUP BY repo_id
)
SELECT r.name, coalesce(m.n, 0), coalesce(t.n, 0), coalesce(b.n, 0), coalesce(m.bytes, 0),
    coalesce(b.own, 0), coalesce(b.shared, 0), coalesce(u.pulls, 0), coalesce(u.pushes, 0),
    u.last_pull, u.last_push
FROM r
LEFT JOIN m ON m.repo_id = r.id
LEFT JOIN t ON t.repo_id = r.id
LEFT JOIN b ON b.repo_id = r.id
LEFT JOIN repository_usage u ON u.repo_id = r.id
ORDER BY r.name
"""


def repository_usage(row: Row) -> RepositoryUsage:
    """A row of the usage report: name, manifests, tags, blobs, manifest bytes, own and shared
    bytes, pulls, pushes, last pull, last push (sums may come as decimals: PostgreSQL)."""
    manifests, tags, blobs, manifest_bytes, own, shared, pulls, pushes = map(int, row[1:9])
    return RepositoryUsage(
        row[0], manifests, tags, blobs, manifest_bytes, own, shared, pulls, pushes, row[9], row[10]
    )
