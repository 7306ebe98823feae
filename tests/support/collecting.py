"""Registries to collect garbage from: ``make_gc_env(driver, backend, **gc)`` builds one on a
storage driver and a metadata backend (a fresh PostgreSQL database, migrated), with the
``[gc]`` settings the collector tests use (overridable); ``collect`` runs a collection."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from moorage.meta.postgres.schema import migrate
from moorage.registry.collector import CollectionReport
from tests.support.app import MakeEnv, RegistryEnv
from tests.support.postgres import PostgresServer

HOST = "registry.example"
GRACE = 60.0
UNTAGGED = 3600.0
WINDOW = 7200.0
COMBINATIONS = [
    ("filesystem", "sqlite"),
    ("memory", "sqlite"),
    ("s3", "sqlite"),
    ("filesystem", "postgres"),
    ("s3", "postgres"),
]
_databases = itertools.count(1)


MakeGcEnv = Callable[..., Awaitable[RegistryEnv]]


@pytest.fixture
async def make_gc_env(make_env: MakeEnv, request: pytest.FixtureRequest) -> MakeGcEnv:
    async def make(driver: str, backend: str, **gc: Any) -> RegistryEnv:
        sections: dict[str, Any] = {
            "gc": {
                "grace": GRACE,
                "untagged_after": UNTAGGED,
                "pins_window": WINDOW,
                "history_window": WINDOW,
                "inventory_max_age": 0,  # the tests move the clock past any limit
                **gc,
            }
        }
        if backend == "postgres":
            server: PostgresServer = request.getfixturevalue("postgres_server")
            dsn = server.create_database(f"moorage_gc_{os.getpid()}_{next(_databases)}")
            await migrate(dsn)
            sections["metadata"] = {"backend": "postgres", "dsn": dsn}
        return await make_env(driver, **sections)

    return make


async def collect(env: RegistryEnv, **options: Any) -> CollectionReport:
    """One collection of the registry, with ``HOST`` as its name."""
    return await env.registry.collector(hosts=[HOST]).run(**options)
