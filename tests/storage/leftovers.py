"""What crashed writers leave behind, made by hand for each driver, for the sweep's tests."""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from moorage.storage.base import StorageDriver, SweepReport
from moorage.storage.filesystem import EMPTY_DIRECTORIES, TEMPORARY_FILES, FilesystemDriver
from moorage.storage.memory import MemoryDriver
from moorage.storage.s3 import S3Driver
from moorage.storage.s3_config import S3Config
from moorage.storage.s3_garbage import UNFINISHED_UPLOADS, UNREFERENCED_SEGMENTS


def s3_client(config: S3Config) -> Any:
    """A boto3 client of the driver's bucket: another S3 client than the driver's."""
    return boto3.client(
        "s3",
        endpoint_url=config.endpoint,
        region_name=config.region,
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        verify=str(config.ca_file) if config.ca_file else None,
        config=Config(s3={"addressing_style": "path"}),
    )


def segment_path(config: S3Config, segment_id: str) -> str:
    return f"{config.prefix}/_segments/{segment_id}"


async def start_multipart(config: S3Config, path: str, part: bytes) -> str:
    """Start a multipart upload of ``path``, send one part and leave it unfinished, as a
    writer that died does; its upload id."""

    def start() -> str:
        client = s3_client(config)
        upload_id: str = client.create_multipart_upload(Bucket=config.bucket, Key=path)["UploadId"]
        client.upload_part(
            Bucket=config.bucket, Key=path, UploadId=upload_id, PartNumber=1, Body=part
        )
        return upload_id

    return await asyncio.to_thread(start)


async def unfinished_uploads(config: S3Config) -> list[str]:
    """The paths of the unfinished multipart uploads under the driver's prefix."""

    def listed() -> list[str]:
        found = s3_client(config).list_multipart_uploads(
            Bucket=config.bucket, Prefix=f"{config.prefix}/"
        )
        return sorted(upload["Key"] for upload in found.get("Uploads", []))

    return await asyncio.to_thread(listed)


async def leave_leftovers(driver: StorageDriver) -> SweepReport:
    """One leftover of each kind the driver sweeps, 100 bytes each where bytes count; the
    report a sweep that takes them all gives (before any directory the test's deletes left
    empty)."""
    if isinstance(driver, MemoryDriver):
        return SweepReport()
    if isinstance(driver, FilesystemDriver):
        directory = driver.root / "blobs" / "leftover"
        directory.mkdir(parents=True)
        temporary = directory / f".object.{secrets.token_hex(8)}.tmp"
        temporary.write_bytes(os.urandom(100))
        return SweepReport.of((*TEMPORARY_FILES, 1, 100), (*EMPTY_DIRECTORIES, 1, None))
    assert isinstance(driver, S3Driver)
    config = driver.config
    await driver._bucket.put(segment_path(config, secrets.token_hex(16)), "", os.urandom(100))
    await start_multipart(config, segment_path(config, secrets.token_hex(16)), os.urandom(100))
    return SweepReport.of((*UNREFERENCED_SEGMENTS, 1, 100), (*UNFINISHED_UPLOADS, 1, 100))
