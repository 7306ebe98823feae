"""Fixtures for the metadata suites: every test runs against every backend.

For PostgreSQL, each test gets a database of its own, copied from a template migrated once
per session (``CREATE DATABASE ... TEMPLATE``: about 20 ms with its drop, where creating a
schema and migrating it again takes about 25 ms). The server is started for the session
(``tests/support/postgres.py``), or named by ``MOORAGE_TEST_POSTGRES_DSN``.

Stores run on the test's ``clock`` (``tests.support.clocks.SteppingClock``): a test moves
time instead of sleeping.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from moorage.meta.postgres import PostgresMetadata
from moorage.meta.postgres.schema import migrate
from moorage.meta.protocols import MetadataStore
from moorage.meta.sqlite import SQLiteMetadata
from tests.support.clocks import SteppingClock
from tests.support.postgres import PostgresServer, run_async

#: Opens a second, independent handle on the same metadata (like another worker process).
Opener = Callable[[], MetadataStore]

BACKENDS = ["sqlite", "postgres"]

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A migrated database to copy (nobody may stay connected to it)."""
    name = f"moorage_template_{os.getpid()}"
    dsn = postgres_server.create_database(name)
    run_async(lambda: migrate(dsn))
    return name


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    """A fresh, migrated, empty database of the test's own."""
    name = f"moorage_test_{os.getpid()}_{next(_databases)}"
    dsn = postgres_server.create_database(name, template=postgres_template)
    yield dsn
    postgres_server.drop_database(name)


@pytest.fixture
def clock() -> SteppingClock:
    """The time of every handle ``open_meta`` opens, starting now."""
    return SteppingClock(time.time())


@pytest.fixture(params=BACKENDS)
def open_meta(request: pytest.FixtureRequest, tmp_path: Path, clock: SteppingClock) -> Opener:
    """A factory for handles on one fresh metadata store, for every backend. Each handle is
    independent (its own SQLite connections, or its own PostgreSQL pool), like a replica."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_dsn")

        def open_postgres() -> MetadataStore:
            return PostgresMetadata(dsn, clock=clock)

        return open_postgres
    path = tmp_path / "meta.db"

    def open_sqlite() -> MetadataStore:
        return SQLiteMetadata(path, clock=clock)

    return open_sqlite


@pytest.fixture
async def meta(open_meta: Opener) -> AsyncIterator[MetadataStore]:
    store = open_meta()
    yield store
    await store.close()
