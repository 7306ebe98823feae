"""Building the storage driver and the metadata store that the settings ask for.

The embedded default is the filesystem under the data directory with SQLite beside it. For
scale-out, blobs go to S3-compatible object storage and metadata to PostgreSQL; any mix works
(S3 with SQLite on one host, say). The backends' modules are imported only when chosen, so
the embedded default loads neither client library.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TypeVar

from moorage import metrics
from moorage.config import Settings
from moorage.meta.protocols import MetadataStore
from moorage.meta.sqlite import SQLiteMetadata
from moorage.storage.base import StorageDriver
from moorage.storage.filesystem import FilesystemDriver
from moorage.storage.memory import MemoryDriver

S = TypeVar("S", bound=MetadataStore)


def open_storage(settings: Settings) -> StorageDriver:
    if settings.storage.driver == "memory":
        return MemoryDriver()
    if settings.storage.driver == "s3":
        from moorage.storage.s3 import S3Driver
        from moorage.storage.s3_config import S3Config

        s3 = settings.storage.s3
        assert s3.endpoint and s3.bucket and s3.access_key and s3.secret_key  # checked
        return S3Driver(
            S3Config(
                endpoint=s3.endpoint,
                region=s3.region,
                bucket=s3.bucket,
                access_key=s3.access_key,
                secret_key=s3.secret_key,
                path_style=s3.path_style,
                prefix=s3.prefix,
                download_urls=s3.redirect,
                public_endpoint=s3.public_endpoint,
                ca_file=s3.ca_file,
            )
        )
    return FilesystemDriver(settings.data / "storage")


def open_metadata(
    settings: Settings, clock: Callable[[], float] = time.time, *, timed: bool = False
) -> MetadataStore:
    """The store the settings name; ``clock`` stamps what it records; ``timed``: a sample of
    its operations is timed for ``/metrics`` (``moorage_metadata_operation_duration_seconds``,
    ``metrics.SampledOperations``)."""
    if settings.storage.driver == "memory":
        # Bytes vanish with the process, so the metadata must too.
        return _timed(SQLiteMetadata, timed).temporary(clock=clock)
    if settings.metadata.backend == "postgres":
        from moorage.meta.postgres import PostgresMetadata

        postgres = settings.metadata.postgres
        return _timed(PostgresMetadata, timed)(
            postgres.dsn, pool_max=postgres.pool_size, clock=clock
        )
    return _timed(SQLiteMetadata, timed)(settings.database, clock=clock)


#: The metadata store's operations: every coroutine method of its protocol but opening and
#: closing.
STORE_OPERATIONS = tuple(
    name
    for name, member in inspect.getmembers(MetadataStore, inspect.iscoroutinefunction)
    if name not in ("connect", "close")
)


def _timed(cls: type[S], timed: bool) -> type[S]:
    """``cls``, or with ``timed`` its subclass timing a sample of the store's operations."""
    return metrics.current().timed_operations(cls, STORE_OPERATIONS) if timed else cls


def describe_backends(settings: Settings) -> str:
    """Where the registry keeps things, for the log (no credentials)."""
    if settings.storage.driver == "memory":
        return "in memory"
    if settings.storage.driver == "s3":
        storage = f"blobs in s3 {settings.storage.s3.endpoint}/{settings.storage.s3.bucket}"
    else:
        storage = f"blobs in {settings.data / 'storage'}"
    if settings.metadata.backend == "postgres":
        return f"{storage}, metadata in postgres"
    return f"{storage}, metadata in {settings.database}"


def uses_data_directory(settings: Settings) -> bool:
    """Whether anything is kept under ``settings.data`` (blobs or the SQLite database)."""
    return settings.storage.driver == "filesystem" or (
        settings.storage.driver != "memory" and settings.metadata.backend == "sqlite"
    )


async def migrate(settings: Settings) -> tuple[int, int]:
    """Bring the metadata schema up to date; the schema versions before and after.

    SQLite migrates itself whenever it is opened (one file, one host); PostgreSQL is shared
    by every replica, so its migrations are an explicit step (``moorage migrate``), which
    ``moorage serve`` also takes at start unless ``metadata.migrate`` is off.
    """
    if settings.metadata.backend != "postgres":
        raise ValueError("moorage migrate applies to the postgres metadata backend")
    from moorage.meta.postgres.schema import migrate as migrate_postgres

    return await migrate_postgres(settings.metadata.postgres.dsn)
