"""In-memory driver: for tests and throwaway registries. Not shared between processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable

from moorage.storage.base import ObjectNotFound, StoredObject, SweepReport, WriterBusy

_READ_CHUNK = 1 << 20


class MemoryWriter:
    def __init__(
        self,
        store: dict[str, bytearray],
        key: str,
        open_keys: set[str],
        modified: dict[str, float],
    ) -> None:
        self._store = store
        self._key = key
        self._open_keys = open_keys
        self._modified = modified

    @property
    def size(self) -> int:
        return len(self._store.get(self._key, b""))

    async def write(self, data: bytes) -> None:
        self._store.setdefault(self._key, bytearray()).extend(data)
        self._modified[self._key] = time.time()

    async def checkpoint(self) -> Awaitable[None]:
        """Every write is already as durable as this driver gets (the process's memory)."""
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def close(self) -> None:
        self._open_keys.discard(self._key)

    async def abort(self) -> None:
        self._open_keys.discard(self._key)


class MemoryDriver:
    def __init__(self) -> None:
        self._objects: dict[str, bytearray] = {}
        self._modified: dict[str, float] = {}
        self._writing: set[str] = set()  # keys with an open writer

    async def stat(self, key: str) -> int | None:
        data = self._objects.get(key)
        return None if data is None else len(data)

    async def get(self, key: str) -> bytes:
        try:
            return bytes(self._objects[key])
        except KeyError:
            raise ObjectNotFound(key) from None

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        data = self._objects.get(key)
        if data is None:
            raise ObjectNotFound(key)
        end = len(data) if length is None else min(len(data), offset + length)
        view = memoryview(bytes(data[offset:end]))
        for start in range(0, len(view), _READ_CHUNK):
            yield bytes(view[start : start + _READ_CHUNK])

    async def put(self, key: str, data: bytes) -> None:
        self._objects[key] = bytearray(data)
        self._modified[key] = time.time()

    async def open_writer(self, key: str, offset: int = 0) -> MemoryWriter:
        if key in self._writing:
            raise WriterBusy(key)
        current = self._objects.get(key)
        if offset and (current is None or len(current) < offset):
            raise ObjectNotFound(key)
        if current is None:
            self._objects[key] = bytearray()
        else:
            del current[offset:]
        self._modified[key] = time.time()
        self._writing.add(key)
        return MemoryWriter(self._objects, key, self._writing, self._modified)

    async def commit(self, source: str, target: str) -> None:
        data = self._objects.pop(source, None)
        if data is None:
            raise ObjectNotFound(source)
        modified = self._modified.pop(source, time.time())
        if target not in self._objects:
            self._objects[target] = data
            self._modified[target] = modified

    async def delete(self, key: str) -> bool:
        self._modified.pop(key, None)
        return self._objects.pop(key, None) is not None

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        for key in list(self._objects):
            if key.startswith(prefix):
                yield key

    async def list_objects(self, prefix: str) -> AsyncIterator[StoredObject]:
        for key, data in list(self._objects.items()):
            if key.startswith(prefix):
                yield StoredObject(key, len(data), self._modified.get(key, 0.0))

    async def sweep(self, older_than: float, *, dry_run: bool = False) -> SweepReport:
        """Nothing is ever left behind in memory."""
        return SweepReport()

    async def download_url(self, key: str, expires: float) -> str | None:
        return None

    async def close(self) -> None:
        return None
