"""Upload sessions in SQLite (``UploadStore``). Every write is one statement, or one
read-and-update on the writer thread (which serializes them)."""

from __future__ import annotations

import sqlite3

from moorage.meta.errors import BlobBeingDeleted, UploadLeaseLost
from moorage.meta.leases import check_acquire
from moorage.meta.rows import UPLOAD_COLUMNS, upload_record, upload_values
from moorage.meta.sqlite.database import Database, ensure_repo, record_blob
from moorage.model import Upload

_SELECT = f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ? AND repository = ?"


def _refuse_if_deleting(conn: sqlite3.Connection, digest: str | None) -> None:
    """BlobBeingDeleted if garbage collection is deleting the bytes of ``digest`` now."""
    if (
        digest is not None
        and conn.execute(
            "SELECT 1 FROM blob_deletions WHERE digest = ? AND marked_at IS NOT NULL", (digest,)
        ).fetchone()
    ):
        raise BlobBeingDeleted(digest)


class Uploads(Database):
    async def create_upload(self, upload: Upload) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _refuse_if_deleting(conn, upload.digest)
            conn.execute(
                f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                upload_values(upload),
            )

        await self._write(tx)

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
        completing: str | None = None,
    ) -> Upload:
        def tx(conn: sqlite3.Connection) -> Upload:
            row = conn.execute(_SELECT, (upload_id, repository)).fetchone()
            upload = check_acquire(
                None if row is None else upload_record(row), upload_id, offset, now, take_over
            )
            _refuse_if_deleting(conn, completing)
            upload.lease_until, upload.lease_owner = now + lease, owner
            upload.digest = completing
            conn.execute(
                "UPDATE uploads SET lease_until = ?, lease_owner = ?, digest = ? WHERE id = ?",
                (upload.lease_until, owner, completing, upload_id),
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

    async def complete_upload(
        self, upload_id: str, lease_until: float, digest: str, size: int, now: float
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT repository FROM uploads WHERE id = ? AND lease_until = ? "
                "AND lease_until > ?",
                (upload_id, lease_until, now),
            ).fetchone()
            if row is None:
                raise UploadLeaseLost(upload_id)
            record_blob(conn, ensure_repo(conn, row[0], now), digest, size, now)
            conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

        await self._write(tx)

    async def delete_upload(self, upload_id: str) -> None:
        await self._change("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        rows = self._reader.execute(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < ? AND lease_until < ?",
            (updated_before, self._clock()),
        ).fetchall()
        return [upload_record(row) for row in rows]
