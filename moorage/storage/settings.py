"""The ``[storage]`` and ``[storage.s3]`` settings: where blobs are kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from moorage.documents import SECRET, Invalid

Driver = Literal["filesystem", "s3", "memory"]


@dataclass(frozen=True)
class S3Settings:
    """S3-compatible object storage: endpoint URL, region, bucket and credentials."""

    endpoint: str | None = None
    region: str = "us-east-1"
    bucket: str | None = None
    access_key: str | None = None
    secret_key: Annotated[str, SECRET] | None = None
    #: Address buckets as ``endpoint/bucket`` (most self-hosted stores) instead of
    #: ``bucket.endpoint`` (virtual-hosted style).
    path_style: bool = True
    #: Prefix of every key moorage stores in the bucket (several registries can share one).
    prefix: str = ""
    #: Send blob downloads to a presigned URL of the object store (307) instead of streaming
    #: them through the registry, when the clients can reach the store; seconds it is valid.
    redirect: bool = False
    redirect_expiry: float = 1200.0
    #: The store's URL as clients reach it, for redirects (default: the endpoint).
    public_endpoint: str | None = None
    #: PEM file of CA certificates to trust for an https:// endpoint, besides the system's
    #: (a store behind a private CA).
    ca_file: Path | None = None


@dataclass(frozen=True)
class StorageSettings:
    #: "filesystem" (under ``data``), "s3" (``[storage.s3]``), or "memory" (one process only).
    driver: Driver = "filesystem"
    s3: S3Settings = field(default_factory=S3Settings)

    def verify(self) -> None:
        if self.driver == "s3":
            for name in ("endpoint", "bucket", "access_key", "secret_key"):
                if not getattr(self.s3, name):
                    raise Invalid("missing (the s3 storage driver needs it)", "s3", name)

    @property
    def download_redirect(self) -> float | None:
        """Seconds a presigned download URL is valid, or None when downloads are streamed."""
        return self.s3.redirect_expiry if self.s3.redirect else None
