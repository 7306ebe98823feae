"""The scale-out topology on one machine: SeaweedFS (S3), PostgreSQL, several ``moorage serve``
replicas sharing them, and HAProxy balancing requests round-robin over the replicas.

The multi-replica tests run against it, and ``make scale-out`` starts it for a user to try
(``python -m tests.support.topology --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.haproxy import HAProxy, start_haproxy
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.seaweedfs import SeaweedFS, start_seaweedfs
from tests.support.server import RunningRegistry, free_port, start_moorage

BUCKET = "moorage"


@dataclass
class Topology:
    workdir: Path
    seaweedfs: SeaweedFS
    postgres: PostgresServer
    dsn: str
    replicas: list[RunningRegistry]
    front: HAProxy
    replica_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def registry(self) -> RunningRegistry:
        """The front door, shaped like a single registry for the client tests."""
        return RunningRegistry(
            self.front.host, self.front.port, self.workdir, self.front.process, self.front.log
        )

    def restart_replica(self, index: int) -> None:
        """Start replica ``index`` (0-based) again on its port; HAProxy's health check sees
        it come back."""
        old = self.replicas[index]
        old.stop()
        self.replicas[index] = start_moorage(
            self.workdir / f"replica{index + 1}",
            workers=1,
            args=self.replica_args,
            env=self.env,
            port=old.port,
        )

    def kill_replica(self, index: int) -> None:
        """SIGKILL: the replica dies mid-request, as a crashed pod does."""
        process = self.replicas[index].process
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()

    def stop(self) -> None:
        for stop in (
            self.front.stop,
            *(replica.stop for replica in self.replicas),
            self.postgres.stop,
            self.seaweedfs.stop,
        ):
            with contextlib.suppress(Exception):
                stop()


def replica_environment(seaweedfs: SeaweedFS, dsn: str) -> dict[str, str]:
    """Settings every replica shares, as ``MOORAGE_*`` variables (credentials stay off argv)."""
    return {
        "MOORAGE_STORAGE_DRIVER": "s3",
        "MOORAGE_STORAGE_S3_ENDPOINT": seaweedfs.endpoint,
        "MOORAGE_STORAGE_S3_REGION": seaweedfs.region,
        "MOORAGE_STORAGE_S3_BUCKET": BUCKET,
        "MOORAGE_STORAGE_S3_ACCESS_KEY": seaweedfs.access_key,
        "MOORAGE_STORAGE_S3_SECRET_KEY": seaweedfs.secret_key,
        "MOORAGE_METADATA_BACKEND": "postgres",
        "MOORAGE_METADATA_DSN": dsn,
    }


def start_topology(
    workdir: Path,
    *,
    replicas: int = 3,
    port: int | None = None,
    host: str = "127.0.0.1",
    replica_args: tuple[str, ...] = (),
) -> Topology:
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        seaweedfs = start_seaweedfs(workdir / "seaweedfs", buckets=(BUCKET,))
        cleanup.callback(seaweedfs.stop)
        postgres = start_postgres(workdir / "postgres")
        cleanup.callback(postgres.stop)
        dsn = postgres.create_database("moorage")
        env = replica_environment(seaweedfs, dsn)
        # Started together, the replicas race to migrate the schema; one does it.
        with ThreadPoolExecutor(replicas) as pool:
            starts = [
                pool.submit(
                    start_moorage,
                    workdir / f"replica{index + 1}",
                    workers=1,
                    args=replica_args,
                    env=env,
                )
                for index in range(replicas)
            ]
        running = [start.result() for start in starts if start.exception() is None]
        for replica in running:
            cleanup.callback(replica.stop)
        failures = [error for start in starts if (error := start.exception()) is not None]
        if failures:
            raise RuntimeError(f"{len(failures)} replica(s) did not start") from failures[0]
        front = start_haproxy(
            workdir / "haproxy", host, port or free_port(), [r.address for r in running]
        )
        cleanup.pop_all()
    return Topology(workdir, seaweedfs, postgres, dsn, running, front, replica_args, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make scale-out",
        description="Run moorage replicas on SeaweedFS (S3) and PostgreSQL behind HAProxy.",
    )
    parser.add_argument("--dir", type=Path, default=Path("scale-out"), help="working directory")
    parser.add_argument("--port", type=int, default=5000, help="front door port (127.0.0.1)")
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args(argv)
    topology = start_topology(args.dir.resolve(), replicas=args.replicas, port=args.port)
    print(f"moorage front door: http://{topology.front.address}  (HAProxy, round-robin)")
    for replica in topology.replicas:
        print(f"  replica   http://{replica.address}  log {replica.log}")
    print(f"  S3        {topology.seaweedfs.endpoint}  bucket {BUCKET}")
    print(f"  postgres  {topology.dsn}")
    print(
        "try: skopeo copy --dest-tls-verify=false docker-archive:img.tar "
        f"docker://{topology.front.address}/demo/app:v1"
    )
    print("Ctrl-C stops everything (data stays under", args.dir, ")", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    topology.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
