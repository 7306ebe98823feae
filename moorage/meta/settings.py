"""The ``[metadata]`` settings: which metadata store, and how to reach PostgreSQL.

The PostgreSQL keys (``dsn``, ``pool_size``, ``migrate``) sit in ``[metadata]`` itself, as
users write them; ``postgres`` gives them as one value for the backend that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from moorage.documents import SECRET, Invalid, at_least

Backend = Literal["sqlite", "postgres"]


@dataclass(frozen=True)
class PostgresSettings:
    #: ``postgresql://user:password@host:port/database``.
    dsn: str
    #: Connections each worker process keeps open at most.
    pool_size: int
    #: Bring the schema up to date when the registry starts.
    migrate: bool


@dataclass(frozen=True)
class MetadataSettings:
    #: "sqlite" (``data``/moorage.db, the embedded default) or "postgres".
    backend: Backend = "sqlite"
    #: PostgreSQL connection string (``postgresql://user:password@host:port/database``).
    dsn: Annotated[str, SECRET] | None = None
    #: Connections each worker process keeps open to PostgreSQL at most.
    pool_size: Annotated[int, at_least(1)] = 10
    #: Bring the PostgreSQL schema up to date when the registry starts (otherwise run
    #: ``moorage migrate`` first; the registry refuses an outdated schema).
    migrate: bool = True

    def verify(self) -> None:
        if self.backend == "postgres" and not self.dsn:
            raise Invalid("missing (the postgres metadata backend needs it)", "dsn")

    @property
    def postgres(self) -> PostgresSettings:
        """The PostgreSQL settings; only with ``backend = "postgres"``."""
        if self.backend != "postgres" or not self.dsn:
            raise ValueError("the metadata backend is not postgres")
        return PostgresSettings(self.dsn, self.pool_size, self.migrate)
