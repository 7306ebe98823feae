"""Upload sessions in PostgreSQL (``UploadStore``). Leases need no transaction: acquiring one
is a single ``UPDATE ... WHERE lease_until <= now`` (PostgreSQL re-checks the condition on the
newest row version after waiting for a concurrent update, so exactly one of several racers
gets it), and renew, checkpoint and release compare the lease value, which fences off a
holder whose lease was taken over."""

from __future__ import annotations

from moorage.meta.errors import UploadBusy
from moorage.meta.leases import check_acquire
from moorage.meta.postgres.database import Database
from moorage.meta.rows import UPLOAD_COLUMNS, upload_record, upload_values
from moorage.model import Upload

# One compare-and-set: among racers, the row lock makes each later one re-check the condition
# against the winner's lease.
_ACQUIRE = f"""
UPDATE uploads SET lease_until = $3 + $4, lease_owner = $6
WHERE id = $1 AND repository = $2
  AND (lease_until <= $3 OR lease_until = $7::double precision)
  AND ($5::bigint IS NULL OR "offset" = $5)
RETURNING {UPLOAD_COLUMNS}
"""


class Uploads(Database):
    async def create_upload(self, upload: Upload) -> None:
        await self._change(
            f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            *upload_values(upload),
        )

    async def get_upload(self, upload_id: str, repository: str) -> Upload | None:
        row = await self._fetchrow(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND repository = $2",
            upload_id,
            repository,
        )
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
        for _ in range(100):
            row = await self._fetchrow(
                _ACQUIRE, upload_id, repository, now, lease, offset, owner, take_over
            )
            if row is not None:
                return upload_record(row)
            # Raises why the lease was not free; if it is free now, it was released between
            # the two statements: try again.
            upload = await self.get_upload(upload_id, repository)
            check_acquire(upload, upload_id, offset, now, take_over)
        raise UploadBusy(upload_id)

    async def renew_upload(
        self, upload_id: str, lease_until: float, new_lease_until: float
    ) -> bool:
        return await self._change(
            "UPDATE uploads SET lease_until = $1 WHERE id = $2 AND lease_until = $3",
            new_lease_until,
            upload_id,
            lease_until,
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
            'UPDATE uploads SET "offset" = $1, hash_state = $2, updated_at = $3 '
            "WHERE id = $4 AND lease_until = $5",
            offset,
            hash_state,
            now,
            upload_id,
            lease_until,
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
            'UPDATE uploads SET "offset" = $1, hash_state = $2, updated_at = $3, '
            "lease_until = 0, lease_owner = '' WHERE id = $4 AND lease_until = $5",
            offset,
            hash_state,
            now,
            upload_id,
            lease_until,
        )

    async def delete_upload(self, upload_id: str) -> None:
        await self._change("DELETE FROM uploads WHERE id = $1", upload_id)

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        rows = await self._fetch(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < $1 AND lease_until < $2",
            updated_before,
            self._clock(),
        )
        return [upload_record(row) for row in rows]
