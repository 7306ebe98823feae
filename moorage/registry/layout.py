"""Where the registry keeps things in a storage driver. The only place keys are built.

    blobs/<algorithm>/<first two hex chars>/<hex>   blob bytes, content-addressed
    uploads/<upload id>                              bytes of an upload in progress

Manifests and tags live in the metadata store, not in storage.
"""

from __future__ import annotations

from moorage.digest import Digest


def blob_key(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"
