"""Benchmark moorage against CNCF Distribution (``docker-registry``), side by side, in one run.

The entry point: it parses the arguments, starts both registries (``servers.py``), runs the
four measurements in turn (monolithic upload, download by curl and by Python, chunked upload:
``transfers.py``; manifest GET and HEAD by tag under load: ``load.py``), with
``--metrics-rounds`` a fifth (what the metrics cost a manifest GET: ``metrics_load.py``),
prints the table (``report.py``) and can keep every number in a JSON file; README.md says
what is measured and how. Run as a script, Python puts benchmarks/ first on sys.path, so the
sibling modules are imported by their plain names (no package, no sys.path edits), as mypy
resolves them too.
Usage: .venv/bin/python benchmarks/registry.py [--size-mib 1024] [--repeat 3] [--json out.json]
       [--metrics-rounds 100 [--metrics-pairs 5] [--metrics-placebo]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checkout import VENV_BIN, describe
from cpu import machine_busy_percent
from errors import BenchmarkError, check_tools, exit_status
from load import LOAD_METRICS, run_load
from metrics_load import run_pairs
from metrics_load import table as metrics_table
from registry_http import check_blob, check_rejects_wrong_digest, push_image
from repeats import alternating
from report import per_process, print_and_save, summarize, table
from servers import METRICS_OFF, METRICS_ON, REGISTRIES, Server, start_server
from transfers import (
    MIB,
    BlobFile,
    Sample,
    chunked_upload,
    download,
    make_random_file,
    measured,
    monolithic_upload,
    python_download,
    verify_download,
)


def check_disk(work: Path, args: argparse.Namespace, registries: list[str]) -> None:
    size = args.size_mib * MIB
    chunked = args.chunked_mib * MIB
    # One source file at a time; every registry keeps each uploaded blob, plus one in flight.
    needed = max(size, chunked) + len(registries) * (
        args.repeat * (size + chunked) + max(size, chunked)
    )
    needed += 512 * MIB
    free = shutil.disk_usage(work).free
    print(f"disk: {free / 2**30:.1f} GiB free in {work}, need about {needed / 2**30:.1f} GiB")
    if free < needed:
        raise BenchmarkError("not enough free disk space; lower --size-mib or --repeat")


def timed_uploads(
    args: argparse.Namespace,
    servers: dict[str, Server],
    name: str,
    source: Path,
    size: int,
    upload: Callable[[Server, str, BlobFile], float],
    *,
    verify_first: bool = False,
) -> tuple[BlobFile, dict[str, Any]]:
    """Upload a new random file of ``size`` bytes (written to ``source``) per repeat to every
    registry, so that none can take a "blob already exists" shortcut, and check it is stored
    (with ``verify_first``, also download the first one back and compare its sha256); each
    file is deleted once every registry has it. (The first blob, which stays in the
    registries, and the summary by registry.)"""
    blobs: list[BlobFile] = []
    samples: dict[str, list[Sample]] = {key: [] for key in servers}
    for index, key in alternating(list(servers), args.repeat):
        if len(blobs) <= index:
            blobs.append(make_random_file(source, size))
        blob, server = blobs[index], servers[key]
        sample = measured(
            server,
            size,
            lambda: upload(server, name, blob),  # noqa: B023
            args.wait_idle,
            args.pretouch_mib * MIB,
        )
        check_blob(server, name, blob.digest, size)
        if verify_first and index == 0:
            verify_download(server, name, blob)
        samples[key].append(sample)
        print(f"  {server.label:<12} run {index + 1}: {sample.mib_s:8.1f} MiB/s")
        if all(len(runs) > index for runs in samples.values()):
            blob.path.unlink()
    return blobs[0], {key: summarize(runs) for key, runs in samples.items()}


def run(args: argparse.Namespace, work: Path, servers: dict[str, Server]) -> dict[str, Any]:
    registries = list(servers)
    size, chunked_size = args.size_mib * MIB, args.chunked_mib * MIB
    results: dict[str, dict[str, Any]] = {}
    steps = 5 if args.metrics_rounds else 4

    for server in servers.values():
        check_rejects_wrong_digest(server)

    # 1. Monolithic upload; every repeat a new random file, uploaded to each registry.
    print(f"\n[1/{steps}] monolithic upload of {args.size_mib} MiB x {args.repeat}")
    blob, results["upload"] = timed_uploads(
        args, servers, "bench/blob", work / "blob.bin", size, monolithic_upload
    )

    # 2. Download of the first uploaded blob (already in the page cache on both sides).
    print(
        f"\n[2/{steps}] download of {args.size_mib} MiB x {args.download_repeat}, curl then Python"
    )
    for server in servers.values():
        verify_download(server, "bench/blob", blob)
    for metric, client, function in (
        ("download", "curl", download),
        ("download_python", "Python", python_download),
    ):
        samples: dict[str, list[Sample]] = {key: [] for key in registries}
        for index, key in alternating(registries, args.download_repeat):
            server = servers[key]
            sample = measured(
                server,
                size,
                lambda: function(server, "bench/blob", blob),  # noqa: B023
                args.wait_idle,
            )
            samples[key].append(sample)
            print(f"  {server.label:<12} run {index + 1} ({client}): {sample.mib_s:8.1f} MiB/s")
        results[metric] = {key: summarize(runs) for key, runs in samples.items()}

    # 3. Chunked upload; new random files again.
    chunk = args.chunk_mib * MIB
    print(
        f"\n[3/{steps}] chunked upload of {args.chunked_mib} MiB in {args.chunk_mib} MiB PATCHes"
        f" x {args.repeat}"
    )
    _, results["chunked_upload"] = timed_uploads(
        args,
        servers,
        "bench/chunked",
        work / "chunked.bin",
        chunked_size,
        lambda server, name, blob: chunked_upload(server, name, blob, chunk),
        verify_first=True,
    )

    # 4. Manifest GET and HEAD by tag under load.
    print(
        f"\n[4/{steps}] manifest by tag, {args.connections} connections, {args.duration}s "
        f"after a {args.warmup}s warm-up: GET by wrk -t{args.wrk_threads} --latency, "
        "HEAD and GET by ab -k"
    )
    for server in servers.values():
        push_image(server, "bench/image", "latest")
    for metric, method, tool in LOAD_METRICS:
        results[metric] = {}
        for key in registries:
            server = servers[key]
            result = run_load(server, "/v2/bench/image/manifests/latest", method, tool, args)
            print(
                f"  {method:<4} {tool:<3} {server.label:<12} {result.requests_s:9.0f} req/s  "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                f"errors {result.errors}  non-2xx {result.non_2xx}  "
                f"keep-alive {result.keepalive}/{result.requests}  "
                f"CPU % by server process {per_process(result.processes)}"
            )
            results[metric][key] = result.to_json()

    # 5. What the metrics cost a manifest GET: moorage against itself with them off.
    if args.metrics_rounds:
        compared = "off and off (placebo)" if args.metrics_placebo else "on and off"
        print(
            f"\n[5/5] manifest GET by tag, metrics {compared}: "
            f"{args.metrics_rounds} rounds of {args.metrics_seconds}s by wrk and by ab, over "
            f"{args.metrics_pairs} pairs of servers"
        )

        def start_pair_server(key: str, pair: int, seed: int) -> Server:
            """A fresh moorage, alike to its pair's other but for the metrics."""
            server = start_server(
                METRICS_OFF if args.metrics_placebo else key,
                work,
                args.moorage,
                args.distribution,
                instance=f"-{pair}-{'on' if key == METRICS_ON else 'off'}",
                variables={"PYTHONHASHSEED": str(seed)},
            )
            push_image(server, "bench/image", "latest")
            return server

        results["metrics_cost"] = run_pairs(args, start_pair_server)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="blob size (default 1024)")
    parser.add_argument(
        "--chunked-mib", type=int, help="chunked upload blob size (default: --size-mib)"
    )
    parser.add_argument("--chunk-mib", type=int, default=8, help="PATCH size (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per transfer (default 3)")
    parser.add_argument(
        "--download-repeat", type=int, default=5, help="runs per download (default 5)"
    )
    parser.add_argument("--duration", type=int, default=10, help="load seconds (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds (default 3)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50, help="wrk/ab connections")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60,
        help="before each measurement wait up to this many seconds for the machine to be idle"
        " (<15%% of a core busy); 0: do not wait (default 60)",
    )
    parser.add_argument(
        "--pretouch-mib",
        type=int,
        help="before each timed upload, write and free this much memory (default: twice the"
        " blob size; 0: do not). In a VM that hands freed memory back to its host, the first"
        " write to a page is slow; pre-touching lets the upload's page cache use warm pages",
    )
    parser.add_argument(
        "--metrics-rounds",
        type=int,
        default=0,
        help="also measure what the metrics cost a manifest GET: this many rounds of moorage"
        " with [metrics] on and off in turn (default 0: do not; 100 to tell 1-2%% apart)",
    )
    parser.add_argument(
        "--metrics-seconds", type=int, default=2, help="seconds per metrics-cost run (default 2)"
    )
    parser.add_argument(
        "--metrics-pairs",
        type=int,
        default=5,
        help="pairs of fresh servers the metrics-cost rounds are spread over (default 5)",
    )
    parser.add_argument(
        "--metrics-placebo",
        action="store_true",
        help="measure the metrics cost with the metrics off in both servers: the method's error",
    )
    parser.add_argument("--only", choices=REGISTRIES, help="benchmark one registry only")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--tmpdir", type=Path, help="where to create the work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--moorage", type=Path, default=VENV_BIN / "moorage", help="moorage binary")
    parser.add_argument("--distribution", default="/usr/bin/docker-registry")
    args = parser.parse_args(argv)
    if args.chunked_mib is None:
        args.chunked_mib = args.size_mib
    if args.pretouch_mib is None:
        args.pretouch_mib = 2 * max(args.size_mib, args.chunked_mib)
    positive = (args.size_mib, args.chunked_mib, args.chunk_mib, args.repeat, args.duration)
    if min(*positive, args.download_repeat) < 1:
        parser.error("sizes, --repeat and --duration must be positive")
    if args.metrics_rounds < 0 or (args.metrics_rounds and args.only == "distribution"):
        parser.error("--metrics-rounds needs moorage and a count of 0 or more")
    if args.metrics_seconds < 1 or args.metrics_pairs < 1:
        parser.error("--metrics-seconds and --metrics-pairs must be positive")
    return args


def versions(args: argparse.Namespace) -> dict[str, str]:
    def output(argv: list[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:
            return str(exc)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]

    return {
        "moorage_git": describe(),
        "distribution": output([args.distribution, "--version"]),
        "curl": output(["curl", "--version"]),
        "wrk": output(["wrk", "--version"]),
        "ab": output(["ab", "-V"]),
        "python": sys.version.split()[0],
        "cpus": str(os.cpu_count()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if check_tools(("curl", "wrk", "ab", args.distribution, str(args.moorage))):
        return 2
    return exit_status(lambda: benchmark(args))


def benchmark(args: argparse.Namespace) -> None:
    """Start the registries, measure, stop them and delete the work directory, report."""
    registries = [args.only] if args.only else list(REGISTRIES)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="moorage-bench-", dir=args.tmpdir))
    servers: dict[str, Server] = {}
    try:
        check_disk(work, args, registries)
        idle_busy = machine_busy_percent()
        print(f"machine busy before the run: {idle_busy:.0f}% of one core")
        if idle_busy > 20:
            print("warning: other processes are using the CPU; the numbers may be disturbed")
        for key in registries:
            servers[key] = start_server(key, work, args.moorage, args.distribution)
            print(f"{servers[key].label} on {servers[key].base}, data in {servers[key].data}")
        results = run(args, work, servers)
    finally:
        for server in servers.values():
            server.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report = table(results, registries, args)
    if "metrics_cost" in results:
        report += "\n\n" + metrics_table(results["metrics_cost"], args)
    print_and_save(
        report,
        started,
        args,
        environment=lambda: versions(args),
        busy_before_pct=idle_busy,
        results=results,
    )


if __name__ == "__main__":
    sys.exit(main())
