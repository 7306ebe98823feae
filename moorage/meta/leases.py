"""The rule of an upload's lease, for every backend (``UploadStore.acquire_upload``)."""

from __future__ import annotations

from moorage.meta.errors import UploadBusy, UploadNotFound, UploadOffsetMismatch
from moorage.model import Upload


def check_acquire(
    upload: Upload | None, upload_id: str, offset: int | None, now: float, take_over: float | None
) -> Upload:
    """``upload`` if a request may take its lease at ``now``; otherwise raise why not.

    The lease is free once it has run out, or (with ``take_over``) when its value is exactly
    that of a holder known to be dead. UploadNotFound if there is no such upload, UploadBusy
    (naming the holder) if the lease is held, UploadOffsetMismatch if ``offset`` is given and
    is not where the upload is.
    """
    if upload is None:
        raise UploadNotFound(upload_id)
    if upload.lease_until > now and upload.lease_until != take_over:
        raise UploadBusy(upload_id, upload.lease_owner, upload.lease_until)
    if offset is not None and offset != upload.offset:
        raise UploadOffsetMismatch(upload.offset)
    return upload
