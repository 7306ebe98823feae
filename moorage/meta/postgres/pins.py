"""Admission pins in PostgreSQL (``PinStore``)."""

from __future__ import annotations

from collections.abc import Sequence

from moorage.meta.postgres.database import Database
from moorage.meta.rows import PIN_COLUMNS, PIN_FIELDS, pin_filters, pin_record, pin_values
from moorage.model import PinRecord

_TYPES = ("float8",) + ("text",) * 12
# One statement, so the rows go in together, with ids in the order given.
_INSERT = (
    f"INSERT INTO pins ({PIN_FIELDS}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(_TYPES))
    + ")"
)


class Pins(Database):
    async def record_pins(self, pins: Sequence[PinRecord]) -> None:
        if pins:
            rows = [pin_values(pin) for pin in pins]
            await self._change(_INSERT, *([row[i] for row in rows] for i in range(len(_TYPES))))

    async def list_pins(
        self,
        namespace: str | None,
        repository: str | None,
        tag: str | None,
        limit: int | None,
        before: int | None,
    ) -> list[PinRecord]:
        filters = pin_filters(namespace, repository, tag)
        where = " AND ".join(
            ["id < $1", *(f"{column} = ${i + 2}" for i, (column, _) in enumerate(filters))]
        )
        rows = await self._fetch(
            f"SELECT {PIN_COLUMNS} FROM pins WHERE {where} "
            f"ORDER BY id DESC LIMIT ${len(filters) + 2}",
            before or 2**62,
            *(value for _, value in filters),
            limit,
        )
        return [pin_record(row) for row in rows]
