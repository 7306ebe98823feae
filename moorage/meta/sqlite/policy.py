"""The tag policy in SQLite (``PolicyStore``): one row, versioned, and a row per change.

Reading the version costs no query while the version hint (``hint.py``) agrees with the one
this handle read last.
"""

from __future__ import annotations

import sqlite3

from moorage.meta.rows import (
    POLICY_CHANGE_COLUMNS,
    POLICY_CHANGE_FIELDS,
    POLICY_COLUMNS,
    policy_change,
    policy_record,
)
from moorage.meta.sqlite.database import Database
from moorage.model import Actor, PolicyChange, PolicyRecord

_SET_POLICY = (
    f"INSERT INTO policy (id, {POLICY_COLUMNS}) VALUES (1, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET document = excluded.document, "
    "version = excluded.version, source = excluded.source, "
    "source_hash = excluded.source_hash, updated_at = excluded.updated_at, "
    '"user" = excluded."user", address = excluded.address'
)
_RECORD_CHANGE = f"INSERT INTO policy_changes ({POLICY_CHANGE_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?)"


def stored_policy_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM policy WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


class Policy(Database):
    async def policy_version(self) -> int:
        hint = self._policy_hint.read()
        if hint == self._policy_version:
            return hint  # no change since it was read (hint.py)
        version = stored_policy_version(self._reader)
        if version == hint:
            self._policy_version = version
        return version

    async def get_policy(self) -> PolicyRecord | None:
        row = self._reader.execute(f"SELECT {POLICY_COLUMNS} FROM policy WHERE id = 1").fetchone()
        return None if row is None else policy_record(row)

    async def set_policy(
        self, document: str, actor: Actor, source: str, source_hash: str | None
    ) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT document, version FROM policy WHERE id = 1").fetchone()
            old, version = (None, 0) if row is None else (row[0], int(row[1]))
            now, user, address = self._clock(), actor.user, actor.address
            conn.execute(
                _SET_POLICY, (document, version + 1, source, source_hash, now, user, address)
            )
            conn.execute(
                _RECORD_CHANGE, (now, user, address, actor.request_id, source, old, document)
            )
            self._policy_hint.publish(version + 1)  # before the commit (hint.py)
            return version + 1

        return await self._write(tx)

    async def policy_changes(self, limit: int | None) -> list[PolicyChange]:
        rows = self._reader.execute(
            f"SELECT {POLICY_CHANGE_COLUMNS} FROM policy_changes ORDER BY id DESC LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [policy_change(row) for row in rows]
