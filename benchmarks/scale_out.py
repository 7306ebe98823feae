"""Scale-out figures: manifest GET by tag with PostgreSQL metadata against SQLite, and how
throughput changes from one replica to three behind HAProxy (blobs on SeaweedFS, metadata on
PostgreSQL), with CNCF Distribution (filesystem) in the same run for reference.

Run from the repository root (it starts the same topology the tests use):

    PYTHONPATH=. .venv/bin/python benchmarks/scale_out.py [--duration 10] [--repeat 3]

1 GiB blob transfers through moorage on S3 against boto3 alone are in ``s3_clients.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from checkout import VENV_BIN
from errors import BenchmarkError, check_tools, exit_status
from load import run_load
from registry_http import push_image
from repeats import alternating
from servers import Server, free_port, spawn, start_server, wait_ready
from transfers import MIB, BlobFile, download, make_random_file, monolithic_upload

from tests.support.haproxy import HAProxy, start_haproxy
from tests.support.server import RunningRegistry
from tests.support.topology import start_topology


def as_server(key: str, address: str, process: subprocess.Popen[bytes], log: Path) -> Server:
    return Server(key, int(address.rsplit(":", 1)[1]), log.parent, log, process)


def start_moorage_on(key: str, work: Path, env: dict[str, str], workers: int = 2) -> Server:
    """``moorage serve`` with the given backend settings (``MOORAGE_*``), on a free port."""
    port = free_port()
    data = work / f"{key}-data"
    data.mkdir()
    log = work / f"{key}.log"
    argv = [str(VENV_BIN / "moorage"), "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--data", str(data), "--workers", str(workers)]
    server = Server(key, port, data, log, spawn(argv, log, {**os.environ, **env}))
    wait_ready(server, server.answers_v2, f"{key} did not answer /v2/")
    return server


def manifest_get(server: Server, args: argparse.Namespace) -> tuple[float, float]:
    """(requests/s, p99 ms) of GET by tag with wrk, 50 connections."""
    push_image(server, "bench/app", "latest")
    result = run_load(server, "/v2/bench/app/manifests/latest", "GET", "wrk", args)
    if result.errors or result.non_2xx:
        raise BenchmarkError(f"{server.label}: {result.errors} errors, {result.non_2xx} non-2xx")
    return result.requests_s, result.p99_ms


def parallel_downloads(server: Server, blob: BlobFile, streams: int) -> float:
    """Aggregate MiB/s of ``streams`` concurrent downloads of one blob."""
    errors: list[BaseException] = []

    def one() -> None:
        try:
            download(server, "bench/blob", blob)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return streams * blob.size / MIB / elapsed


def median_of(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def run(args: argparse.Namespace, work: Path) -> None:
    topology = start_topology(work / "topology", replicas=3)
    servers: dict[str, Server] = {}
    fronts: list[HAProxy] = []
    try:
        metadata_env = {"MOORAGE_METADATA_BACKEND": "postgres"}
        dsn = topology.postgres.create_database("bench_metadata")
        servers["sqlite"] = start_moorage_on("sqlite", work, {})
        servers["postgres"] = start_moorage_on(
            "postgres", work, {**metadata_env, "MOORAGE_METADATA_DSN": dsn}
        )
        servers["distribution"] = start_server(
            "distribution", work, VENV_BIN / "moorage", args.distribution
        )
        # One replica and three replicas of the topology, each behind HAProxy.
        replicas: list[RunningRegistry] = topology.replicas
        for count in (1, 3):
            front = start_haproxy(
                work / f"haproxy-{count}",
                "127.0.0.1",
                free_port(),
                [replica.address for replica in replicas[:count]],
            )
            fronts.append(front)
            servers[f"{count}-replica"] = as_server(
                f"{count}-replica", front.address, front.process, front.log
            )

        print("manifest GET by tag (wrk, 50 connections), median of", args.repeat, "runs")
        figures: dict[str, list[tuple[float, float]]] = {key: [] for key in servers}
        for _, key in alternating(list(servers), args.repeat):
            figures[key].append(manifest_get(servers[key], args))
        medians = {key: median_of(runs) for key, runs in figures.items()}
        for key, (rate, p99) in medians.items():
            print(f"  {key:<13} {rate:>9,.0f} req/s   p99 {p99:6.2f} ms")
        ratio = medians["postgres"][0] / medians["sqlite"][0]
        print(f"  PostgreSQL / SQLite (same storage, 2 workers): {ratio:.2f}x")
        ratio = medians["sqlite"][0] / medians["distribution"][0]
        print(f"  moorage SQLite / Distribution: {ratio:.2f}x")
        ratio = medians["3-replica"][0] / medians["1-replica"][0]
        print(f"  3 replicas / 1 replica (S3 + PostgreSQL, HAProxy): {ratio:.2f}x")

        blob = make_random_file(work / "blob", args.blob_mib * MIB)
        for count in (1, 3):
            monolithic_upload(servers[f"{count}-replica"], "bench/blob", blob)
        print(f"{args.streams} parallel downloads of a {args.blob_mib} MiB blob, MiB/s in all")
        rates: dict[str, list[float]] = {"1-replica": [], "3-replica": []}
        for _, key in alternating(list(rates), args.repeat):
            rates[key].append(parallel_downloads(servers[key], blob, args.streams))
        for key, values in rates.items():
            print(f"  {key:<13} {statistics.median(values):>9,.0f} MiB/s")
        ratio = statistics.median(rates["3-replica"]) / statistics.median(rates["1-replica"])
        print(f"  3 replicas / 1 replica: {ratio:.2f}x")
    finally:
        for front in fronts:
            front.stop()
        for key, server in servers.items():
            if not key.endswith("-replica"):
                server.stop()
        topology.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="load seconds (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--wait-idle", type=float, default=10.0)
    parser.add_argument("--blob-mib", type=int, default=256, help="download blob size")
    parser.add_argument("--streams", type=int, default=4, help="parallel downloads")
    parser.add_argument("--distribution", default="/usr/bin/docker-registry")
    args = parser.parse_args()
    if check_tools(("curl", "wrk", args.distribution)):
        return 2
    with tempfile.TemporaryDirectory(prefix="moorage-scale-out-") as tmp:
        return exit_status(lambda: run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
