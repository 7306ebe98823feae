"""``moorage migrate`` and how ``moorage serve`` treats the PostgreSQL schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from moorage.meta.postgres.schema import SCHEMA_VERSION
from tests.support.postgres import PostgresServer
from tests.support.server import free_port


def moorage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moorage", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_migrate_brings_a_new_database_up_to_date_once(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database(f"cli_migrate_{os.getpid()}")
    first = moorage("migrate", "--dsn", dsn)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"metadata schema migrated from version 0 to {SCHEMA_VERSION}"
    again = moorage("migrate", "--dsn", dsn)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"metadata schema is up to date (version {SCHEMA_VERSION})"


def test_migrate_reads_the_dsn_from_the_config_file(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres_server.create_database(f"cli_migrate_config_{os.getpid()}")
    config = tmp_path / "moorage.toml"
    config.write_text(f'[metadata]\nbackend = "postgres"\ndsn = "{dsn}"\n')
    result = moorage("migrate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"to {SCHEMA_VERSION}" in result.stdout


def test_migrate_reports_an_unreachable_server_without_the_password() -> None:
    dsn = f"postgresql://moorage:s3cret-pw@127.0.0.1:{free_port()}/moorage"
    result = moorage("migrate", "--dsn", dsn)
    assert result.returncode == 1
    assert result.stderr.startswith("moorage: ")
    assert "s3cret-pw" not in result.stderr


def test_serve_refuses_an_unmigrated_schema_when_told_not_to_migrate(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres_server.create_database(f"cli_unmigrated_{os.getpid()}")
    result = moorage(
        "serve",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data",
        str(tmp_path / "data"),
        "--metadata",
        "postgres",
        "--dsn",
        dsn,
        env={"MOORAGE_METADATA_MIGRATE": "false"},
    )
    assert result.returncode == 1
    assert "moorage migrate" in result.stderr
