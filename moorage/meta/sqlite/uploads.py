"""Upload sessions in SQLite (``UploadStore``). Every write is one statement, or one
read-and-update on the writer thread (which serializes them)."""

from __future__ import annotations

import sqlite3

from moorage.meta.leases import check_acquire
from moorage.meta.rows import UPLOAD_COLUMNS, upload_record, upload_values
from moorage.meta.sqlite.database import Database
from moorage.model import Upload

_SELECT = f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ? AND repository = ?"


class Uploads(Database):
    async def create_upload(self, upload: Upload) -> None:
        await self._change(
            f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            upload_values(upload),
        )

    async def get_upload(self, upload_id: str, repository: str) -> Upload | None:
        row = self._reader.execute(_SELECT, (upload_id, repository)).fetchone()
        return None if row is None else upload_record(row)

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
        def tx(conn: sqlite3.Connection) -> Upload:
            row = conn.execute(_SELECT, (upload_id, repository)).fetchone()
            upload = check_acquire(
                None if row is None else upload_record(row), upload_id, offset, now, take_over
            )
            upload.lease_until, upload.lease_owner = now + lease, owner
            conn.execute(
                "UPDATE uploads SET lease_until = ?, lease_owner = ? WHERE id = ?",
                (upload.lease_until, owner, upload_id),
            )
            return upload

        return await self._write(tx)

    async def renew_upload(
        self, upload_id: str, lease_until: float, new_lease_until: float
    ) -> bool:
        return await self._change(
            "UPDATE uploads SET lease_until = ? WHERE id = ? AND lease_until = ?",
            (new_lease_until, upload_id, lease_until),
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
            'UPDATE uploads SET "offset" = ?, hash_state = ?, updated_at = ? '
            "WHERE id = ? AND lease_until = ?",
            (offset, hash_state, now, upload_id, lease_until),
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
            'UPDATE uploads SET "offset" = ?, hash_state = ?, updated_at = ?, lease_until = 0, '
            "lease_owner = '' WHERE id = ? AND lease_until = ?",
            (offset, hash_state, now, upload_id, lease_until),
        )

    async def delete_upload(self, upload_id: str) -> None:
        await self._change("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        rows = self._reader.execute(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < ? AND lease_until < ?",
            (updated_before, self._clock()),
        ).fetchall()
        return [upload_record(row) for row in rows]
