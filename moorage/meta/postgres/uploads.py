"""Upload sessions in PostgreSQL (``UploadStore``). Leases need no transaction: acquiring one
is a single ``UPDATE ... WHERE lease_until <= now`` (PostgreSQL re-checks the condition on the
newest row version after waiting for a concurrent update, so exactly one of several racers
gets it), and renew, checkpoint and release compare the lease value, which fences off a
holder whose lease was taken over."""

from __future__ import annotations

from moorage.meta.errors import BlobBeingDeleted, UploadBusy, UploadLeaseLost
from moorage.meta.leases import check_acquire
from moorage.meta.postgres.database import Database, Transaction, blob_lock, record_blob
from moorage.meta.rows import UPLOAD_COLUMNS, upload_record, upload_values
from moorage.model import Upload

# One compare-and-set: among racers, the row lock makes each later one re-check the condition
# against the winner's lease.
_ACQUIRE = f"""
UPDATE uploads SET lease_until = $3 + $4, lease_owner = $6, digest = $8
WHERE id = $1 AND repository = $2
  AND (lease_until <= $3 OR lease_until = $7::double precision)
  AND ($5::bigint IS NULL OR "offset" = $5)
RETURNING {UPLOAD_COLUMNS}
"""
# Completing as a digest: not while its bytes are being deleted. The deletion's row is locked
# (shared), so a collector marking it as deleting either commits first (and this sees the
# mark) or waits for this to commit (and then sees the upload completing as the digest).
_ACQUIRE_COMPLETING = f"""
WITH deletion AS (
    SELECT marked_at FROM blob_deletions WHERE digest = $8 FOR SHARE
)
UPDATE uploads SET lease_until = $3 + $4, lease_owner = $6, digest = $8
WHERE id = $1 AND repository = $2
  AND (lease_until <= $3 OR lease_until = $7::double precision)
  AND ($5::bigint IS NULL OR "offset" = $5)
  AND NOT EXISTS (SELECT 1 FROM deletion WHERE marked_at IS NOT NULL)
RETURNING {UPLOAD_COLUMNS}
"""
_CREATE_COMPLETING = f"""
WITH deletion AS (
    SELECT marked_at FROM blob_deletions WHERE digest = $9 FOR SHARE
)
INSERT INTO uploads ({UPLOAD_COLUMNS})
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
WHERE NOT EXISTS (SELECT 1 FROM deletion WHERE marked_at IS NOT NULL)
"""
_DELETING = "SELECT 1 FROM blob_deletions WHERE digest = $1 AND marked_at IS NOT NULL"


class Uploads(Database):
    async def create_upload(self, upload: Upload) -> None:
        if upload.digest is None:
            await self._change(
                f"INSERT INTO uploads ({UPLOAD_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *upload_values(upload),
            )
        elif not await self._change(_CREATE_COMPLETING, *upload_values(upload)):
            raise BlobBeingDeleted(upload.digest)

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
        completing: str | None = None,
    ) -> Upload:
        sql = _ACQUIRE if completing is None else _ACQUIRE_COMPLETING
        for _ in range(100):
            row = await self._fetchrow(
                sql, upload_id, repository, now, lease, offset, owner, take_over, completing
            )
            if row is not None:
                return upload_record(row)
            # Raises why the lease was not free; if it is free now, it was released between
            # the two statements: try again.
            upload = await self.get_upload(upload_id, repository)
            check_acquire(upload, upload_id, offset, now, take_over)
            if completing is not None and await self._fetchrow(_DELETING, completing):
                raise BlobBeingDeleted(completing)
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

    async def complete_upload(
        self, upload_id: str, lease_until: float, digest: str, size: int, now: float
    ) -> None:
        async def tx(t: Transaction) -> None:
            repository = await t.conn.fetchval(
                "DELETE FROM uploads WHERE id = $1 AND lease_until = $2 AND lease_until > $3 "
                "RETURNING repository",
                upload_id,
                lease_until,
                now,
            )
            if repository is None:
                raise UploadLeaseLost(upload_id)
            await record_blob(t, await t.ensure_repo(repository, now), digest, size, now)

        await self._transaction(tx, shared=(blob_lock(digest),))

    async def delete_upload(self, upload_id: str) -> None:
        await self._change("DELETE FROM uploads WHERE id = $1", upload_id)

    async def expired_uploads(self, updated_before: float) -> list[Upload]:
        rows = await self._fetch(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < $1 AND lease_until < $2",
            updated_before,
            self._clock(),
        )
        return [upload_record(row) for row in rows]
