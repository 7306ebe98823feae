"""Group commit for SQLite: one thread per process applies every write, in batches.

Each operation is a function of the connection. The thread takes whatever operations are
queued, runs them in one ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint, and
commits once. So concurrent pushes share one write-lock acquisition and one fsync instead of
paying for one each. Processes sharing the database take turns through a blocking file lock
before they ask SQLite for its write lock: a waiting process wakes the moment the other
commits, where SQLite's own busy handler would poll with sleeps of up to 100 ms.

An operation that raises is rolled back to its savepoint alone; its caller gets the
exception, and the others are unaffected. No caller learns its result before the commit that
makes it durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Most operations in one transaction; bounds how long the write lock is held.
MAX_BATCH = 64


@dataclass
class _Operation:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class GroupCommitWriter:
    def __init__(self, conn: sqlite3.Connection, lock_path: Path | None = None) -> None:
        self._conn = conn
        self._lock_fd = (
            None if lock_path is None else os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        )
        self._queue: queue.SimpleQueue[_Operation | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Operation(fn, loop, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._apply(batch)
            if stop:
                return

    def _apply(self, batch: list[_Operation]) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._transaction(batch)
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        for operation in batch:
            with contextlib.suppress(RuntimeError):  # that caller's event loop has closed
                operation.loop.call_soon_threadsafe(
                    _settle, operation.future, operation.result, operation.error
                )

    def _transaction(self, batch: list[_Operation]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation in batch:
                conn.execute("SAVEPOINT operation")
                try:
                    operation.result = operation.fn(conn)
                except Exception as exc:
                    operation.error = exc
                    conn.execute("ROLLBACK TO operation")
                conn.execute("RELEASE operation")
            conn.execute("COMMIT")
        except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch happened
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for operation in batch:
                operation.error, operation.result = exc, None
