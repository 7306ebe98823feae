"""Building the storage driver and the metadata store that the settings ask for.

The embedded default is the filesystem under the data directory with SQLite beside it. For
scale-out, blobs go to S3-compatible object storage and metadata to PostgreSQL; any mix works
(S3 with SQLite on one host, say). The backends' modules are imported only when chosen, so
the embedded default loads neither client library.
"""

from __future__ import annotations

from moorage.config import ConfigError, Settings
from moorage.meta.base import MetadataStore
from moorage.meta.sqlite import SQLiteMetadata
from moorage.storage.base import StorageDriver
from moorage.storage.filesystem import FilesystemDriver
from moorage.storage.memory import MemoryDriver


def open_storage(settings: Settings) -> StorageDriver:
    if settings.storage_driver == "memory":
        return MemoryDriver()
    if settings.storage_driver == "s3":
        from moorage.storage.s3 import S3Config, S3Driver

        assert settings.storage_s3_endpoint and settings.storage_s3_bucket
        assert settings.storage_s3_access_key and settings.storage_s3_secret_key
        return S3Driver(
            S3Config(
                endpoint=settings.storage_s3_endpoint,
                region=settings.storage_s3_region,
                bucket=settings.storage_s3_bucket,
                access_key=settings.storage_s3_access_key,
                secret_key=settings.storage_s3_secret_key,
                path_style=settings.storage_s3_path_style,
                prefix=settings.storage_s3_prefix,
                download_urls=settings.storage_s3_redirect,
                public_endpoint=settings.storage_s3_public_endpoint,
                ca_file=settings.storage_s3_ca_file,
            )
        )
    return FilesystemDriver(settings.data / "storage")


def open_metadata(settings: Settings) -> MetadataStore:
    if settings.storage_driver == "memory":
        # Bytes vanish with the process, so the metadata must too.
        return SQLiteMetadata.temporary()
    if settings.metadata_backend == "postgres":
        from moorage.meta.postgres import PostgresMetadata

        assert settings.metadata_dsn
        return PostgresMetadata(settings.metadata_dsn, pool_max=settings.metadata_pool_size)
    return SQLiteMetadata(settings.database)


def describe_backends(settings: Settings) -> str:
    """Where the registry keeps things, for the log (no credentials)."""
    if settings.storage_driver == "memory":
        return "in memory"
    if settings.storage_driver == "s3":
        storage = f"blobs in s3 {settings.storage_s3_endpoint}/{settings.storage_s3_bucket}"
    else:
        storage = f"blobs in {settings.data / 'storage'}"
    if settings.metadata_backend == "postgres":
        return f"{storage}, metadata in postgres"
    return f"{storage}, metadata in {settings.database}"


def uses_data_directory(settings: Settings) -> bool:
    """Whether anything is kept under ``settings.data`` (blobs or the SQLite database)."""
    return settings.storage_driver == "filesystem" or (
        settings.storage_driver != "memory" and settings.metadata_backend == "sqlite"
    )


async def migrate(settings: Settings) -> tuple[int, int]:
    """Bring the metadata schema up to date; the schema versions before and after.

    SQLite migrates itself whenever it is opened (one file, one host); PostgreSQL is shared
    by every replica, so its migrations are an explicit step (``moorage migrate``), which
    ``moorage serve`` also takes at start unless ``metadata.migrate`` is off.
    """
    if settings.metadata_backend != "postgres":
        raise ConfigError("moorage migrate applies to the postgres metadata backend")
    from moorage.meta.postgres_schema import migrate as migrate_postgres

    assert settings.metadata_dsn
    return await migrate_postgres(settings.metadata_dsn)
