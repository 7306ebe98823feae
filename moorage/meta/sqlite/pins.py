"""Admission pins in SQLite (``PinStore``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from moorage.meta.rows import PIN_COLUMNS, PIN_FIELDS, pin_filters, pin_record, pin_values
from moorage.meta.sqlite.database import Database
from moorage.model import PinRecord

_INSERT = f"INSERT INTO pins ({PIN_FIELDS}) VALUES ({', '.join('?' * len(PIN_FIELDS.split(',')))})"


class Pins(Database):
    async def record_pins(self, pins: Sequence[PinRecord]) -> None:
        rows = [pin_values(pin) for pin in pins]

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(_INSERT, rows)

        await self._write(tx)

    async def list_pins(
        self,
        namespace: str | None,
        repository: str | None,
        tag: str | None,
        limit: int | None,
        before: int | None,
    ) -> list[PinRecord]:
        filters = pin_filters(namespace, repository, tag)
        where = " AND ".join(["id < ?", *(f"{column} = ?" for column, _ in filters)])
        rows = self._reader.execute(
            f"SELECT {PIN_COLUMNS} FROM pins WHERE {where} ORDER BY id DESC LIMIT ?",
            (before or 2**62, *(value for _, value in filters), -1 if limit is None else limit),
        ).fetchall()
        return [pin_record(row) for row in rows]
