"""Garbage collection, moorage against CNCF Distribution, on the same registry content.

Each registry gets ``--images`` small images (a config and ``--layers`` layers of
``--layer-kib`` KiB of random bytes, every blob its own image's), pushed over HTTP by an
asyncio + aiohttp client ``--concurrency`` at a time into 50 repositories; a quarter of the
manifests are then deleted by digest, so exactly their blobs are garbage. Paced clients push
new images and pull kept ones (checking every digest) for ``--duration`` seconds.

moorage (``moorage serve``, filesystem + SQLite) is collected online, with the same clients
running: ``moorage gc`` once (it unlinks), a wait of ``--grace`` seconds, ``moorage gc`` again
(the bytes go). Distribution is stopped, collected by ``docker-registry garbage-collect
--delete-untagged`` and started again. Afterwards every kept image must pull whole and every
garbage blob must be gone, from the storage directory and to ``HEAD``. README.md says more.
Usage: .venv/bin/python benchmarks/gc.py [--images 10000] [--layers 4] [--layer-kib 4]
       [--concurrency 16] [--duration 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from checkout import VENV_BIN, describe
from cpu import CpuMeter, machine_busy_percent, quiesce
from errors import BenchmarkError, check_tools, exit_status
from gc_client import (
    Load,
    LoadResult,
    LoadShape,
    blobs_absent,
    delete_all,
    push_all,
    verify_pulls,
)
from gc_collectors import (
    distribution_gc,
    moorage_gc,
    restart_distribution,
    start_moorage,
    stored_blobs,
)
from gc_report import table, targets
from gc_workload import REPOSITORIES, Image, Population, make_population
from report import print_and_save
from servers import REGISTRIES, Server, start_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="images pushed (10000)")
    parser.add_argument("--layers", type=int, default=4, help="layers per image (4)")
    parser.add_argument("--layer-kib", type=int, default=4, help="KiB per layer (4)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="connections pushing the images (16)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30,
        help="seconds of load without collection (30); with collection, the load lasts as "
        "long as the two runs and the wait between them",
    )
    parser.add_argument("--pushers", type=int, default=2, help="clients pushing new images (2)")
    parser.add_argument(
        "--push-rate", type=float, default=20, help="new images/s, all pushers together (20)"
    )
    parser.add_argument("--pullers", type=int, default=4, help="clients pulling kept images (4)")
    parser.add_argument(
        "--pull-rate", type=float, default=40, help="images/s, all pullers together (40)"
    )
    parser.add_argument(
        "--grace", type=float, default=10, help="moorage's gc.grace in seconds (10)"
    )
    parser.add_argument("--workers", type=int, default=2, help="moorage workers (2)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=30,
        help="before each registry's run, wait up to this long for the machine to be idle",
    )
    parser.add_argument("--only", choices=REGISTRIES, help="benchmark one registry only")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--tmpdir", type=Path, help="where to create the work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--moorage", type=Path, default=VENV_BIN / "moorage", help="moorage binary")
    parser.add_argument("--distribution", default="/usr/bin/docker-registry")
    args = parser.parse_args(argv)
    counts = (args.images, args.layers, args.layer_kib, args.concurrency, args.workers)
    if min(counts) < 1 or args.images < 4:
        parser.error("--images (at least 4), --layers, --layer-kib, --concurrency, --workers")
    if min(args.pushers, args.pullers) < 0 or min(args.push_rate, args.pull_rate) < 0:
        parser.error("--pushers, --pullers and the rates must not be negative")
    if args.duration <= 0 or args.grace < 0:
        parser.error("--duration must be positive, --grace not negative")
    return args


def shape(args: argparse.Namespace) -> LoadShape:
    return LoadShape(args.pushers, args.push_rate, args.pullers, args.pull_rate)


def load_line(label: str, result: dict[str, Any]) -> str:
    return (
        f"  {label}: {result['seconds']:.0f} s, {result['pushes']} images pushed "
        f"(p50 {result['push_p50_ms']:.1f} ms, p99 {result['push_p99_ms']:.1f} ms, "
        f"{result['push_failures']} failed), {result['pulls']} pulled "
        f"(p50 {result['pull_p50_ms']:.1f} ms, p99 {result['pull_p99_ms']:.1f} ms, "
        f"{result['pull_failures']} failed)"
    )


async def populate(
    server: Server, population: Population, args: argparse.Namespace
) -> dict[str, Any]:
    """Push every image, delete a quarter of the manifests; the timings."""
    images = population.images
    with CpuMeter(server.proc.pid) as cpu:
        seconds = await push_all(server, images, args.concurrency)
    blobs = sum(len(image.blobs) for image in images)
    print(
        f"  pushed {len(images)} images ({blobs} blobs) in {seconds:.1f} s: "
        f"{len(images) / seconds:.0f} images/s"
    )
    deleted = population.deleted
    delete_seconds = await delete_all(server, deleted, args.concurrency)
    print(f"  deleted {len(deleted)} manifests by digest in {delete_seconds:.1f} s")
    return {
        "push_seconds": seconds,
        "push_images_s": len(images) / seconds,
        "push_requests_s": (blobs * 2 + len(images)) / seconds,
        "push_cpu_pct": cpu.percent,
        "delete_seconds": delete_seconds,
        "deleted_at": time.monotonic(),
    }


async def load_for(load: Load, seconds: float) -> LoadResult:
    stop = asyncio.Event()
    with CpuMeter(load.server.proc.pid) as cpu:
        task = asyncio.create_task(load.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        result = await task
    result.cpu = cpu.percent
    return result


async def verify(
    server: Server,
    population: Population,
    pushed: list[Image],
    concurrency: int,
) -> dict[str, Any]:
    """After collection: every kept image (from the population and the load) pulls whole,
    every garbage blob answers 404 to HEAD in its repository."""
    kept = [*population.kept, *pushed]
    start = time.perf_counter()
    failed, failures = await verify_pulls(server, kept, concurrency)
    garbage = [(image.repository, blob) for image in population.deleted for blob in image.blobs]
    absent, present = await blobs_absent(server, garbage, concurrency)
    print(
        f"  afterwards: {len(kept) - failed} of {len(kept)} kept images pulled whole; "
        f"{absent} of {len(garbage)} garbage blobs answer 404 to HEAD "
        f"({time.perf_counter() - start:.0f} s)"
    )
    for line in [*failures, *present][:10]:
        print(f"    {line}")
    return {
        "kept_images": len(kept),
        "kept_failed": failed,
        "kept_failures": failures,
        "garbage_blobs": len(garbage),
        "garbage_head_404": absent,
        "garbage_head_other": present,
    }


def on_disk(
    key: str, server: Server, population: Population, before: dict[str, int]
) -> dict[str, Any]:
    """What the collection removed from the storage directory: all of it, the garbage."""
    after = stored_blobs(key, server.data)
    garbage = {blob.hex: blob.size for blob in population.garbage}
    manifests = {image.digest.split(":", 1)[1] for image in population.deleted}
    removed = {hex_: size for hex_, size in before.items() if hex_ not in after}
    return {
        "blobs_before": len(before),
        "bytes_before": sum(before.values()),
        "blobs_after": len(after),
        "bytes_after": sum(after.values()),
        "removed_blobs": len(removed),
        "removed_bytes": sum(removed.values()),
        "removed_garbage_blobs": sum(1 for h in removed if h in garbage),
        "removed_garbage_bytes": sum(size for h, size in removed.items() if h in garbage),
        "removed_manifest_blobs": sum(1 for h in removed if h in manifests),
        "removed_manifest_bytes": sum(size for h, size in removed.items() if h in manifests),
        "removed_other": sorted(h for h in removed if h not in garbage and h not in manifests)[:20],
        "garbage_left": sum(1 for h in garbage if h in after),
        "garbage_left_bytes": sum(size for h, size in garbage.items() if h in after),
    }


async def moorage_phases(
    server: Server, config: Path, population: Population, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    setup = await populate(server, population, args)
    deleted_at = setup.pop("deleted_at")
    await asyncio.to_thread(quiesce, args.wait_idle)
    load = Load(
        server, shape(args), population.kept, len(population.images), args.layers, args.layer_kib
    )
    without = await load_for(load, args.duration)
    print(load_line("without collection", without.summary()))

    # The links of the garbage must be older than the grace period for the first run.
    wait = deleted_at + args.grace + 1 - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    before = await asyncio.to_thread(stored_blobs, "moorage", server.data)
    garbage = {blob.digest for blob in population.garbage}

    stop = asyncio.Event()
    with CpuMeter(server.proc.pid) as meter:
        task = asyncio.create_task(load.run(stop))
        try:
            await asyncio.sleep(1)  # the clients are under way before the collector starts
            windows = [time.perf_counter()]
            first = await asyncio.to_thread(moorage_gc, args.moorage, config, work / "gc-1.json")
            windows.append(time.perf_counter())
            print(f"  moorage gc run 1: {first.timed.seconds:.1f} s")
            await asyncio.sleep(args.grace + 1)
            windows.append(time.perf_counter())
            second = await asyncio.to_thread(moorage_gc, args.moorage, config, work / "gc-2.json")
            windows.append(time.perf_counter())
            print(f"  moorage gc run 2: {second.timed.seconds:.1f} s")
            await asyncio.sleep(1)
        finally:
            stop.set()
            during = await task
    during.cpu = meter.percent
    ran = [(windows[0], windows[1]), (windows[2], windows[3])]
    waited = windows[2] - windows[1]
    print(load_line("during collection", during.summary()))
    while_ = during.summary(ran)["while"]
    print(
        f"  while a moorage gc process ran: {while_['pushes']} pushes (p99 "
        f"{while_['push_p99_ms']:.1f} ms), {while_['pulls']} pulls (p99 "
        f"{while_['pull_p99_ms']:.1f} ms)"
    )
    server.check_alive()
    runs = [first.summary(garbage), second.summary(garbage)]
    for index, run in enumerate(runs, 1):
        print(
            f"  run {index} reported: {run['manifests_deleted']} manifests, "
            f"{run['links_deleted']} links, {run['bytes_freed']} bytes freed; retired "
            f"{run['retired']['count']}, bytes deleted of {run['deleted']['count']} blobs, "
            f"{run['waiting']['count']} waiting"
        )
    disk = await asyncio.to_thread(on_disk, "moorage", server, population, before)
    checks = await verify(server, population, [*without.pushed, *during.pushed], args.concurrency)
    server.check_alive()
    return {
        **setup,
        "without": without.summary(),
        "during": during.summary(ran),
        "runs": runs,
        "collection_seconds": sum(run["seconds"] for run in runs),
        "wait_seconds": waited,
        "disk": disk,
        "checks": checks,
    }


def measure_moorage(population: Population, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"moorage ({args.workers} workers, filesystem + SQLite):")
    server, config = start_moorage(args.moorage, work, args.workers, args.grace)
    try:
        return asyncio.run(moorage_phases(server, config, population, work, args))
    except BenchmarkError as exc:
        raise BenchmarkError(f"moorage: {exc}\n{server.log_tail()}") from None
    finally:
        server.stop()


async def distribution_load(
    server: Server, population: Population, args: argparse.Namespace
) -> tuple[dict[str, Any], LoadResult]:
    setup = await populate(server, population, args)
    setup.pop("deleted_at")
    await asyncio.to_thread(quiesce, args.wait_idle)
    load = Load(
        server, shape(args), population.kept, len(population.images), args.layers, args.layer_kib
    )
    without = await load_for(load, args.duration)
    print(load_line("without collection", without.summary()))
    return setup, without


def measure_distribution(
    population: Population, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    print("Distribution (filesystem):")
    server = start_server("distribution", work, args.moorage, args.distribution)
    try:
        setup, without = asyncio.run(distribution_load(server, population, args))
        before = stored_blobs("distribution", server.data)
        down = time.perf_counter()
        with CpuMeter(server.proc.pid) as cpu:
            server.stop()
            run = distribution_gc(args.distribution, work)
        print(
            f"  docker-registry garbage-collect: {run.timed.seconds:.1f} s ({run.marked} blobs "
            f"marked, {run.eligible_blobs} blobs and {run.eligible_manifests} manifests "
            "eligible for deletion)"
        )
        server = restart_distribution(server, work, args.distribution)
        down = time.perf_counter() - down
        print(f"  registry down for {down:.1f} s (stop, collect, start)")
        disk = on_disk("distribution", server, population, before)
        checks = asyncio.run(verify(server, population, without.pushed, args.concurrency))
        server.check_alive()
    except BenchmarkError as exc:
        raise BenchmarkError(f"Distribution: {exc}\n{server.log_tail()}") from None
    finally:
        server.stop()
    return {
        **setup,
        "without": without.summary(),
        "collection_seconds": run.timed.seconds,
        "collection_cpu_seconds": run.timed.cpu_seconds,
        "collection_cpu_pct": cpu.percent,
        "marked": run.marked,
        "eligible_blobs": run.eligible_blobs,
        "eligible_manifests": run.eligible_manifests,
        "down_seconds": down,
        "disk": disk,
        "checks": checks,
    }


def versions(args: argparse.Namespace) -> dict[str, str]:
    def output(argv: list[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:
            return str(exc)
        return ((proc.stdout or proc.stderr).strip().splitlines() or [""])[0]

    return {
        "moorage_git": describe(),
        "distribution": output([args.distribution, "--version"]),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "cpus": str(os.cpu_count()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if check_tools((args.distribution, str(args.moorage))):
        return 2
    return exit_status(lambda: benchmark(args))


def benchmark(args: argparse.Namespace) -> None:
    registries = [args.only] if args.only else list(REGISTRIES)
    started = time.perf_counter()
    population = make_population(args.images, args.layers, args.layer_kib)
    garbage = population.garbage
    print(
        f"{len(population.images)} images of a config + {args.layers} x {args.layer_kib} KiB "
        f"in {REPOSITORIES} repositories; {len(population.deleted)} manifests deleted leave "
        f"{len(garbage)} blobs, {sum(b.size for b in garbage)} bytes unreferenced"
    )
    work = Path(tempfile.mkdtemp(prefix="moorage-gc-", dir=args.tmpdir))
    results: dict[str, Any] = {}
    try:
        busy = machine_busy_percent()
        print(f"machine busy before the run: {busy:.0f}% of one core")
        if busy > 20:
            print("warning: other processes are using the CPU; the numbers may be disturbed")
        for key in registries:
            directory = work / key
            directory.mkdir()
            measure = measure_moorage if key == "moorage" else measure_distribution
            results[key] = measure(population, directory, args)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report = table(results, registries, population, args)
    verdict = targets(results, population)
    print_and_save(
        report + ("\n\n" + "\n".join(verdict) if verdict else ""),
        started,
        args,
        environment=lambda: versions(args),
        busy_before_pct=busy,
        results=results,
        setup={
            "images": len(population.images),
            "deleted_images": len(population.deleted),
            "garbage_blobs": len(garbage),
            "garbage_bytes": sum(b.size for b in garbage),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
