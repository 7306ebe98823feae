"""The tag policy in PostgreSQL (``PolicyStore``): one row, versioned, and a row per change.
A change holds the policy lock exclusively, so no guarded tag change (which holds it shared)
commits beside it under the version it replaced."""

from __future__ import annotations

from moorage.meta.postgres.database import POLICY_LOCK, Database, Transaction
from moorage.meta.rows import (
    POLICY_CHANGE_COLUMNS,
    POLICY_CHANGE_FIELDS,
    POLICY_COLUMNS,
    policy_change,
    policy_record,
)
from moorage.model import Actor, PolicyChange, PolicyRecord

_SET_POLICY = f"""
WITH policy_row AS (
    INSERT INTO policy (id, {POLICY_COLUMNS}) VALUES (1, $1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (id) DO UPDATE SET
        document = excluded.document, version = excluded.version, source = excluded.source,
        source_hash = excluded.source_hash, updated_at = excluded.updated_at,
        "user" = excluded."user", address = excluded.address
)
INSERT INTO policy_changes ({POLICY_CHANGE_FIELDS}) VALUES ($5, $6, $7, $8, $3, $9, $1)
"""


class Policy(Database):
    async def policy_version(self) -> int:
        row = await self._fetchrow("SELECT version FROM policy WHERE id = 1")
        return 0 if row is None else int(row[0])

    async def get_policy(self) -> PolicyRecord | None:
        row = await self._fetchrow(f"SELECT {POLICY_COLUMNS} FROM policy WHERE id = 1")
        return None if row is None else policy_record(row)

    async def set_policy(
        self, document: str, actor: Actor, source: str, source_hash: str | None
    ) -> int:
        async def tx(t: Transaction) -> int:
            row = await t.conn.fetchrow("SELECT document, version FROM policy WHERE id = 1")
            old, version = (None, 0) if row is None else (row[0], int(row[1]))
            user, address, request_id = actor.user, actor.address, actor.request_id
            await t.conn.execute(
                _SET_POLICY,
                *(document, version + 1, source, source_hash, self._clock(), user, address),
                *(request_id, old),
            )
            return version + 1

        return await self._transaction(tx, exclusive=(POLICY_LOCK,))

    async def policy_changes(self, limit: int | None) -> list[PolicyChange]:
        rows = await self._fetch(
            f"SELECT {POLICY_CHANGE_COLUMNS} FROM policy_changes ORDER BY id DESC LIMIT $1", limit
        )
        return [policy_change(row) for row in rows]
