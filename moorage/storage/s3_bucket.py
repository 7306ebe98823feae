"""The S3 calls the driver makes, through obstore, with its errors mapped to the driver's.

``Bucket`` holds the obstore ``S3Store``, made on first use: building the driver stays cheap
and synchronous, and nothing of obstore's runtime (a tokio thread pool) exists in a process
before it sends its first request. That runtime does not survive ``fork``: a parent process
must not use the driver before forking workers that use it.

Errors: a missing object is ``None`` or ``ObjectNotFound`` (said at each method); a failed
precondition (``If-None-Match: *`` or ``If-Match``) is ``Conflict``; anything else the store
or the network does wrong is ``StorageError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import S3Store

from moorage.storage.base import ObjectNotFound, StorageError

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, GetResult, PutMode


class Conflict(StorageError):
    """A conditional write found the object created or changed by someone else."""


@dataclass(frozen=True, slots=True)
class Listed:
    """An object as a LIST finds it (no metadata: S3 lists none)."""

    path: str
    size: int
    #: Unix time of its last write (LastModified).
    modified: float
    e_tag: str | None


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the bucket is and how to talk to it (see ``S3Config``)."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str
    path_style: bool
    timeout: float
    sign_payload: bool
    #: PEM CA certificates trusted besides the system's (for an https endpoint).
    root_certificates: bytes | None = None


def _describe(exc: BaseException) -> str:
    # obstore's messages end in a long debug dump of the request; its first line says it.
    return str(exc).split("\n", 1)[0][:500]


@contextlib.contextmanager
def translated(key: str) -> Iterator[None]:
    """Map obstore's exceptions: not found to ObjectNotFound(key), others to StorageError."""
    try:
        yield
    except FileNotFoundError:
        raise ObjectNotFound(key) from None
    except (AlreadyExistsError, PreconditionError) as exc:
        raise Conflict(f"{key}: {_describe(exc)}") from exc
    except (BaseError, OSError, ValueError, RuntimeError) as exc:
        raise StorageError(f"S3 request for {key} failed: {_describe(exc)}") from exc


class Bucket:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._store: S3Store | None = None
        self._public: S3Store | None = None

    def reset(self) -> None:
        """Forget the clients; the next request makes new ones."""
        self._store = self._public = None

    @property
    def store(self) -> S3Store:
        if self._store is None:
            self._store = self._make_store(self.connection.endpoint)
        return self._store

    def _make_store(self, endpoint: str) -> S3Store:
        connection = self.connection
        timeout = timedelta(seconds=connection.timeout)
        with translated(connection.bucket):
            return S3Store(
                connection.bucket,
                endpoint=endpoint.rstrip("/"),
                region=connection.region,
                access_key_id=connection.access_key,
                secret_access_key=connection.secret_key,
                virtual_hosted_style_request=not connection.path_style,
                unsigned_payload=not connection.sign_payload,
                client_options={
                    "allow_http": endpoint.startswith("http://"),
                    "connect_timeout": timedelta(seconds=10),
                    "timeout": timeout,
                    **(
                        {"root_certificate": connection.root_certificates}
                        if connection.root_certificates
                        else {}
                    ),
                },
                retry_config={
                    "max_retries": 3,
                    "retry_timeout": timedelta(seconds=min(30.0, connection.timeout)),
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=2),
                        "base": 2,
                    },
                },
            )

    async def get(
        self, path: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> GetResult | None:
        """GET an object (``byte_range`` is start, end exclusive); None if it is missing."""
        try:
            with translated(key):
                if byte_range is None:
                    return await obstore.get_async(self.store, path)
                return await obstore.get_async(self.store, path, options={"range": byte_range})
        except ObjectNotFound:
            return None

    async def head(self, path: str, key: str) -> GetResult | None:
        """HEAD an object (its attributes included); None if it is missing."""
        try:
            with translated(key):
                return await obstore.get_async(self.store, path, options={"head": True})
        except ObjectNotFound:
            return None

    async def put(
        self,
        path: str,
        key: str,
        data: bytes,
        *,
        attributes: dict[str, str] | None = None,
        mode: str = "overwrite",
    ) -> str | None:
        """PUT a small object in one request; returns its ETag.

        ``mode`` is "overwrite", "create" (``If-None-Match: *``) or an ETag the current object
        must have (``If-Match``); a failed condition raises ``Conflict``.
        """
        put_mode: PutMode
        if mode == "create":
            put_mode = "create"
        elif mode == "overwrite":
            put_mode = "overwrite"
        else:
            put_mode = {"e_tag": mode}
        with translated(key):
            result = await obstore.put_async(
                self.store,
                path,
                data,
                attributes=attributes,
                mode=put_mode,
                use_multipart=False,
            )
        return result["e_tag"]

    async def delete(self, paths: Sequence[str], key: str) -> None:
        """Delete objects (DeleteObjects in batches); missing ones are not an error."""
        if paths:
            with translated(key):
                await obstore.delete_async(self.store, list(paths))

    async def pages(self, directory: str, key: str) -> AsyncIterator[list[Listed]]:
        """The objects under ``directory`` (a whole path component, or ""), a LIST page of
        up to 1000 at a time."""
        stream = obstore.list(self.store, directory or None, chunk_size=1000)
        while True:
            with translated(key):
                try:
                    batch = await stream.__anext__()
                except StopAsyncIteration:
                    return
            yield [
                Listed(meta["path"], meta["size"], meta["last_modified"].timestamp(), meta["e_tag"])
                for meta in batch
            ]

    async def top(self, directory: str, key: str) -> tuple[list[str], list[Listed]]:
        """One level under ``directory`` (a whole path component, or ""): the paths of the
        directories in it, and the objects right in it."""
        with translated(key):
            found = await obstore.list_with_delimiter_async(self.store, directory or None)
        objects = [
            Listed(meta["path"], meta["size"], meta["last_modified"].timestamp(), meta["e_tag"])
            for meta in found["objects"]
        ]
        return list(found["common_prefixes"]), objects

    def open_writer(
        self,
        path: str,
        key: str,
        part_size: int,
        concurrency: int,
        attributes: dict[str, str],
    ) -> AsyncWritableFile:
        """A buffered writer: one PUT if it stays under ``part_size``, else a multipart upload
        with up to ``concurrency`` parts in flight."""
        with translated(key):
            return obstore.open_writer_async(
                self.store,
                path,
                attributes=attributes,
                buffer_size=part_size,
                max_concurrency=concurrency,
            )

    def sign_get(self, path: str, key: str, expires: float, endpoint: str | None) -> str:
        """A presigned GET URL, for ``endpoint`` (the address clients use) if given."""
        if endpoint is None:
            store = self.store
        else:
            if self._public is None:
                self._public = self._make_store(endpoint)
            store = self._public
        with translated(key):
            return obstore.sign(store, "GET", path, timedelta(seconds=expires))
