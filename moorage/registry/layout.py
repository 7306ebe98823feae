"""Where the registry keeps things in a storage driver. The only place keys are built.

    blobs/<algorithm>/<first two hex chars>/<hex>   blob bytes, content-addressed
    uploads/<upload id>                              bytes of an upload in progress
    readiness-probe                                  never written: readiness stats it

Manifests and tags live in the metadata store, not in storage.
"""

from __future__ import annotations

from moorage.digest import Digest
from moorage.errors import RegistryError

#: A key nothing writes: the readiness check asks the storage driver for its size.
PROBE_KEY = "readiness-probe"


def blob_key(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def blob_digest(key: str) -> Digest | None:
    """The digest whose bytes ``key`` holds, if it is a blob's key (the inverse of
    ``blob_key``), else None."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "blobs" or parts[2] != parts[3][:2]:
        return None
    try:
        return Digest.parse(f"{parts[1]}:{parts[3]}")
    except RegistryError:
        return None


def upload_id(key: str) -> str | None:
    """The upload whose bytes ``key`` holds (the inverse of ``upload_key``), else None."""
    prefix, _, rest = key.partition("/")
    return rest if prefix == "uploads" and rest and "/" not in rest else None
