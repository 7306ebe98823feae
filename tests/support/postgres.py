"""A real PostgreSQL server for tests: one throwaway cluster, or the one a DSN names.

``start_postgres`` runs Debian's binaries (``/usr/lib/postgresql/<version>/bin``; package
``postgresql``) on a free port of 127.0.0.1, with its Unix socket in its own directory, trust
authentication (local tests only) and durability off for speed (``fsync``,
``synchronous_commit`` and ``full_page_writes``, autovacuum). The cluster lives in a new
directory in /dev/shm (memory; else the system's temporary directory), removed by ``stop``.
initdb refuses to run as root, so as root that directory is owned by ``postgres`` (pytest's
directories of root are not readable by other users) and every binary runs through ``runuser -u
postgres --``. ``postgres`` itself is this process's child, so ``stop`` (``pg_ctl stop -m
fast``) can wait for it and nothing is left behind as ``<defunct>``.

``postgres_for_tests`` is what the test fixtures call: with ``MOORAGE_TEST_POSTGRES_DSN`` set
(a role that may create databases) it uses that server and starts nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg  # type: ignore[import-untyped]

from tests.support.waiting import wait_until

T = TypeVar("T")

#: Set it to a server's DSN (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``) to run
#: the tests against that server instead of starting one.
DSN_VARIABLE = "MOORAGE_TEST_POSTGRES_DSN"
PREFERRED_VERSION = "15"
INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are needed by these tests and were "
    "not found. Install them with `apt-get install postgresql` (Debian/Ubuntu; the binaries go "
    f"to /usr/lib/postgresql/<version>/bin), or set {DSN_VARIABLE} to a server to use."
)
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "autovacuum": "off",
}


def find_binaries(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The directory holding initdb, pg_ctl and postgres; RuntimeError with how to install."""
    candidates = [root / PREFERRED_VERSION / "bin"]
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)
        )
        candidates += [p / "bin" for p in versions]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise RuntimeError(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running loop."""

    async def main() -> T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming another database on the same server (credentials and options kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PostgresServer:
    """A PostgreSQL server; ``dsn`` connects to its maintenance database as a superuser."""

    dsn: str
    #: The cluster's directory and the ``postgres`` process, when this started the server.
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    _binaries: Path | None = None
    _as_postgres: bool = False
    _created: list[str] = field(default_factory=list)
    _version: int | None = None

    @property
    def external(self) -> bool:
        return self.process is None

    def database_dsn(self, database: str) -> str:
        return with_database(self.dsn, database)

    def execute(self, *statements: str, database: str | None = None) -> None:
        """Run statements, each on its own (outside a transaction: CREATE DATABASE)."""
        dsn = self.dsn if database is None else self.database_dsn(database)

        async def run() -> None:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        run_async(run)

    def fetchval(self, sql: str) -> object:
        async def run() -> object:
            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return run_async(run)

    @property
    def version(self) -> int:
        """The server's ``server_version_num`` (150004 for 15.4)."""
        if self._version is None:
            self._version = int(str(self.fetchval("SHOW server_version_num")))
        return self._version

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create (after dropping any of that name) a database; its DSN.

        On a server of our own (fsync off), a copy of a template is made with ``STRATEGY
        FILE_COPY``: 12 ms here where the default WAL_LOG takes 27 ms.
        """
        clause = "" if template is None else f" TEMPLATE {quote_identifier(template)}"
        if template is not None and not self.external and self.version >= 150000:
            clause += " STRATEGY FILE_COPY"
        self.execute(
            f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)",
            f"CREATE DATABASE {quote_identifier(name)}{clause}",
        )
        self._created.append(name)
        return self.database_dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")
        with contextlib.suppress(ValueError):
            self._created.remove(name)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> None:
        """Stop a server this started (fast shutdown) and wait for it; for an external server,
        drop the databases created through this object."""
        if self.process is None:
            for name in list(self._created):
                with contextlib.suppress(Exception):
                    self.drop_database(name)
            return
        if self.process.poll() is None:
            assert self.directory is not None and self._binaries is not None
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    self._command(
                        "pg_ctl", "-D", str(self.directory / "data"), "stop", "-m", "fast", "-w"
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=30,
                    check=False,
                )
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _command(self, binary: str, *args: str) -> list[str]:
        assert self._binaries is not None
        argv = [str(self._binaries / binary), *args]
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else argv


def start_postgres(directory: Path, *, timeout: float = 30) -> PostgresServer:
    """initdb a new cluster and start it; returns once it accepts connections.

    ``directory`` receives the server log; the cluster itself goes to a new directory (named
    in the log's first line), removed by ``stop``.
    """
    binaries = find_binaries()
    directory.mkdir(parents=True, exist_ok=True)
    as_postgres = os.geteuid() == 0
    cluster = Path(tempfile.mkdtemp(prefix="moorage-pg-", dir=_cluster_parent()))
    if as_postgres:
        shutil.chown(cluster, "postgres", "postgres")
    log = directory / "postgres.log"
    port = _free_port()
    server = PostgresServer(
        dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        directory=cluster,
        log=log,
        _binaries=binaries,
        _as_postgres=as_postgres,
    )
    data = cluster / "data"
    try:
        with log.open("wb") as out:
            out.write(f"cluster in {cluster}\n".encode())
            out.flush()
            subprocess.run(
                server._command(
                    "initdb",
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )
            settings = {**_SERVER_SETTINGS, "port": str(port)}
            settings["unix_socket_directories"] = str(cluster)
            options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
            argv = server._command("postgres", "-D", str(data), *options)
            server.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _cluster_parent() -> str | None:
    """Where clusters go: /dev/shm (memory) if usable, else the temporary directory.

    On disk (ext4 here), even with fsync off, ``CREATE DATABASE`` took 30-280 ms because of
    the checkpoints around its copy; in memory it takes 7 ms, and initdb is faster too.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _wait_ready(server: PostgresServer, timeout: float) -> None:
    last: BaseException | None = None

    def accepts() -> bool:
        nonlocal last
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(
                f"postgres exited with {server.process.returncode}:\n{server.logs()}"
            )
        try:
            server._version = int(str(server.fetchval("SHOW server_version_num")))
            return True
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            last = exc
            return False

    wait_until(
        accepts,
        lambda: f"postgres to accept connections ({last}):\n{server.logs()}",
        timeout=timeout,
    )


def postgres_for_tests(directory: Path) -> PostgresServer:
    """The server named by ``MOORAGE_TEST_POSTGRES_DSN``, or else a new one in ``directory``."""
    dsn = os.environ.get(DSN_VARIABLE)
    if dsn:
        server = PostgresServer(dsn=dsn)
        try:
            server.execute("SELECT 1")
        except Exception as exc:
            raise RuntimeError(f"{DSN_VARIABLE} is set but its server fails: {exc}") from exc
        return server
    return start_postgres(directory)
