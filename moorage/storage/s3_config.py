"""How the S3 driver reaches its bucket (``S3Config``), and the sizes its reads and writes use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moorage.storage.base import StorageError

MIB = 1 << 20
SEGMENTS = "_segments"
#: Chunks obstore's reads yield, and the largest range one GET asks for. Measured on
#: SeaweedFS through the registry: obstore's 2 MiB chunks beat 1 MiB and 4 MiB; read off the
#: socket, a 1 GiB blob in 16 MiB ranges went at 0.75x the speed of 1 GiB ones, 64 MiB at
#: 0.92x, 256 MiB at 0.97x. Ranges bound how long one request stays open for a slow client.
READ_CHUNK = 2 * MIB
READ_RANGE = 256 * MIB
#: How far reads request ahead: up to this many GETs, while they ask for less than this.
MAX_AHEAD = 8
READ_AHEAD = 16 * MIB
#: How long the URL of a ranged read stays valid: the store checks it when the request
#: arrives, so this only has to cover clock skew.
SIGNED_RANGE_EXPIRY = 900.0
#: S3's smallest part (except the last one of an upload).
MIN_PART = 5 * MIB


@dataclass(frozen=True)
class S3Config:
    """Where the bucket is, and how the driver uses it."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str
    #: ``endpoint/bucket/key`` URLs (most self-hosted stores) instead of ``bucket.endpoint``.
    path_style: bool = True
    #: Prefix of every object the driver stores (several registries can share a bucket).
    prefix: str = ""
    #: ``download_url`` hands out presigned GET URLs only when this is set.
    download_urls: bool = False
    #: The endpoint clients reach the store at, for presigned URLs, if not ``endpoint``.
    public_endpoint: str | None = None
    #: PEM file of CA certificates to trust for an ``https://`` endpoint, besides the
    #: system's (a store behind a private CA); read when the driver is made.
    ca_file: Path | None = None
    #: Multipart part size, and how many parts of one upload are in flight at once.
    part_size: int = 8 * MIB
    concurrency: int = 4
    #: Blobs up to this size are committed as one plain object instead of a descriptor, so
    #: that reading one takes one request instead of two.
    compact_limit: int = MIB
    #: Longest a request may take, the whole body included (seconds). A blob GET streams
    #: at the pace of the registry's client, up to 256 MiB per request, so this also bounds
    #: how slow a client may be (256 MiB an hour is 73 KiB/s).
    timeout: float = 3600.0
    #: Sign request bodies (a SHA-256 of every byte goes into the signature). By default,
    #: as the AWS SDKs do: over plain HTTP yes, over HTTPS no (TLS protects the body).
    sign_payload: bool | None = None

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's minimum)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not self.bucket:
            raise ValueError("bucket must not be empty")


def read_ca(path: Path | None) -> bytes | None:
    """The PEM certificates of ``storage.s3.ca_file``, checked."""
    if path is None:
        return None
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read the S3 CA file {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise StorageError(f"the S3 CA file {path} holds no PEM certificate")
    return pem


def check_key(key: str) -> None:
    """StorageError unless ``key`` is a logical key (not a segment's)."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise StorageError(f"invalid storage key {key!r}")
    if parts[0] == SEGMENTS:
        raise StorageError(f"storage key {key!r} is reserved for the S3 driver's segments")
