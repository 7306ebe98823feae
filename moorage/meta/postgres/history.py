"""Tag history in PostgreSQL (the history queries of ``ManifestStore``): a ``tag_events`` row
per change, found through the indexes on (repository, tag, id) and on the new digest. (SQLite
keeps chains instead, to spare its commits those indexes; here they stay.)"""

from __future__ import annotations

from moorage.meta.postgres.database import Database
from moorage.meta.rows import EVENT_COLUMNS, tag_event
from moorage.model import TagEvent

# The changes that pointed a tag at the digest (indexed), and for each, the tag's next change,
# which pointed it away (found through the tag index).
_DIGEST_EVENTS = f"""
WITH pointed AS (
    SELECT id, repository, tag FROM tag_events WHERE new_digest = $1 AND action <> 'refused'
)
SELECT {EVENT_COLUMNS} FROM tag_events WHERE id IN (
    SELECT id FROM pointed
    UNION
    SELECT (SELECT min(n.id) FROM tag_events n
            WHERE n.repository = p.repository AND n.tag = p.tag AND n.id > p.id
              AND n.action <> 'refused')
    FROM pointed p
) ORDER BY id
"""


class History(Database):
    async def _events(self, where: str, *args: object) -> list[TagEvent]:
        rows = await self._fetch(f"SELECT {EVENT_COLUMNS} FROM tag_events WHERE {where}", *args)
        return [tag_event(row) for row in rows]

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
        rows = await self._fetch(_DIGEST_EVENTS, digest)
        return [tag_event(row) for row in rows]
