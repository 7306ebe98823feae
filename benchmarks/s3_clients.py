"""Which S3 client library should moorage's S3 driver use? Measure them on the same store.

Starts SeaweedFS (``tests/support/seaweedfs.py``, so run it with ``PYTHONPATH=.``) on
127.0.0.1, writes one random file (``--size-mib``, 1 GiB by default, kept in the page cache)
and, for each client, uploads it as a new object and
downloads it again, ``--repeat`` times, alternating which client goes first:

- boto3, the reference: ``upload_file`` (managed multipart on threads); ``get_object``
  streamed in 1 MiB reads, and ``download_fileobj`` (parallel ranged GETs);
- aioboto3: ``upload_file`` (managed multipart on tasks); ``get_object`` in 1 MiB reads;
- obstore: ``put_async`` of the file (multipart in Rust); ``get_async`` in 1 MiB chunks;
- obstore, 1 MiB writes: ``open_writer_async`` fed ``bytes`` from Python, as the driver is;
- the moorage S3 driver: ``open_writer``, 1 MiB writes, ``close``, ``commit``; ``read``;
- the registry: ``moorage serve`` (2 workers) on the same bucket; a monolithic blob upload
  (POST, then PUT of the whole file) and a blob GET, both by curl, as ``registry.py`` does;
- the registry with redirects (``storage.s3.redirect``): the same, but the GET answers 307 to
  a presigned URL of the blob's object, which curl follows (``-L``);
- CNCF Distribution (Debian's ``docker-registry``) with its S3 driver on the same bucket,
  driven the same way, redirects off so that it serves the bytes itself as moorage does.

Every client uses ``--part-mib`` parts and ``--concurrency`` parts in flight (the registry
runs with the driver's defaults). Downloads read the whole object as one stream, as the
registry does when it serves a blob (boto3's parallel ranged download is shown too, as the
best boto3 can do). Uploads are checked by the object's size (the registry's by the digest),
downloads by the bytes received. Throughput is MiB/s, median (min-max); the CPU column is %
of one core for weed / the registry / this process and curl, in the run closest to the
median; ``x`` is the ratio to boto3 (to its single stream for downloads) from the medians,
and ``paired`` the median of the ratios within each repeat, where the two ran back to back.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/s3_clients.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import boto3  # type: ignore[import-untyped]
import obstore
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from checkout import VENV_BIN
from cpu import CpuMeter, quiesce
from errors import BenchmarkError, check_tools, exit_status
from obstore.store import S3Store
from repeats import alternating
from servers import Server, free_port, spawn, wait_ready
from transfers import MIB, BlobFile, download, make_random_file, monolithic_upload

from moorage.storage.s3 import S3Driver
from moorage.storage.s3_config import S3Config
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFS, start_seaweedfs

BUCKET = "bench"
READ_SIZE = MIB


@dataclass
class Setup:
    weed: SeaweedFS
    blob: BlobFile
    part: int
    concurrency: int
    #: The registries under test ("registry": moorage, "distribution"), when chosen.
    registries: dict[str, Server]

    def boto_options(self) -> dict[str, Any]:
        """What boto3 and aioboto3 clients are made with (the same for both)."""
        return {
            "endpoint_url": self.weed.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region_name": REGION,
            "config": Config(
                s3={"addressing_style": "path"},
                max_pool_connections=max(10, self.concurrency),
            ),
        }

    def boto3_client(self) -> Any:
        return boto3.client("s3", **self.boto_options())

    def transfer_config(self) -> Any:
        return TransferConfig(
            multipart_threshold=self.part,
            multipart_chunksize=self.part,
            max_concurrency=self.concurrency,
        )

    def aioboto3_client(self) -> Any:
        return aioboto3.Session().client("s3", **self.boto_options())

    def obstore(self) -> S3Store:
        return S3Store(
            BUCKET,
            endpoint=self.weed.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region=REGION,
            virtual_hosted_style_request=False,
            unsigned_payload=False,  # signed over plain HTTP, as boto3 does
            client_options={"allow_http": True},
        )

    def driver(self) -> S3Driver:
        return S3Driver(
            S3Config(
                endpoint=self.weed.endpoint,
                region=REGION,
                bucket=BUCKET,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                path_style=True,
                prefix="driver",
                part_size=self.part,
                concurrency=self.concurrency,
            )
        )


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_async(body: Callable[[], Coroutine[Any, Any, float]]) -> float:
    """Run ``body`` on a fresh event loop; it returns its own timed duration."""
    return asyncio.run(body())


# --- uploads: each stores the blob at ``key`` and returns the seconds it took ---------------


def upload_boto3(setup: Setup, key: str) -> float:
    client = setup.boto3_client()
    return timed(
        lambda: client.upload_file(
            str(setup.blob.path), BUCKET, key, Config=setup.transfer_config()
        )
    )


def upload_aioboto3(setup: Setup, key: str) -> float:
    async def body() -> float:
        async with setup.aioboto3_client() as client:
            started = time.perf_counter()
            await client.upload_file(
                str(setup.blob.path), BUCKET, key, Config=setup.transfer_config()
            )
            return time.perf_counter() - started

    return run_async(body)


def upload_obstore(setup: Setup, key: str) -> float:
    store = setup.obstore()

    async def body() -> float:
        started = time.perf_counter()
        await obstore.put_async(
            store,
            key,
            setup.blob.path,
            chunk_size=setup.part,
            max_concurrency=setup.concurrency,
        )
        return time.perf_counter() - started

    return run_async(body)


def upload_obstore_writes(setup: Setup, key: str) -> float:
    store = setup.obstore()

    async def body() -> float:
        started = time.perf_counter()
        writer = obstore.open_writer_async(
            store, key, buffer_size=setup.part, max_concurrency=setup.concurrency
        )
        with setup.blob.path.open("rb") as source:
            while chunk := source.read(READ_SIZE):
                await writer.write(chunk)
        await writer.close()
        return time.perf_counter() - started

    return run_async(body)


def upload_driver(setup: Setup, key: str) -> float:
    async def body() -> float:
        driver = setup.driver()
        try:
            started = time.perf_counter()
            writer = await driver.open_writer(f"uploads/{key}", 0)
            with setup.blob.path.open("rb") as source:
                while chunk := source.read(READ_SIZE):
                    await writer.write(chunk)
            await writer.close()
            await driver.commit(f"uploads/{key}", f"blobs/{key}")
            return time.perf_counter() - started
        finally:
            await driver.close()

    return run_async(body)


# --- downloads: each reads the object at ``key``; (seconds, bytes received) ------------------


def download_boto3(setup: Setup, key: str) -> tuple[float, int]:
    client = setup.boto3_client()
    received = 0
    started = time.perf_counter()
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    for chunk in body.iter_chunks(READ_SIZE):
        received += len(chunk)
    return time.perf_counter() - started, received


class CountingSink:
    """A write-only file object that counts what ``download_fileobj`` writes into it."""

    def __init__(self) -> None:
        self.received = 0

    def write(self, data: bytes) -> int:
        self.received += len(data)
        return len(data)


def download_boto3_transfer(setup: Setup, key: str) -> tuple[float, int]:
    client = setup.boto3_client()
    sink = CountingSink()
    seconds = timed(
        lambda: client.download_fileobj(BUCKET, key, sink, Config=setup.transfer_config())
    )
    return seconds, sink.received


def download_aioboto3(setup: Setup, key: str) -> tuple[float, int]:
    received = 0

    async def body() -> float:
        nonlocal received
        async with setup.aioboto3_client() as client:
            started = time.perf_counter()
            response = await client.get_object(Bucket=BUCKET, Key=key)
            body = response["Body"]
            while chunk := await body.read(READ_SIZE):
                received += len(chunk)
            body.close()
            return time.perf_counter() - started

    return run_async(body), received


def download_obstore(setup: Setup, key: str) -> tuple[float, int]:
    store = setup.obstore()
    received = 0

    async def body() -> float:
        nonlocal received
        started = time.perf_counter()
        result = await obstore.get_async(store, key)
        async for chunk in result.stream(min_chunk_size=READ_SIZE):
            received += len(chunk)
        return time.perf_counter() - started

    return run_async(body), received


def download_driver(setup: Setup, key: str) -> tuple[float, int]:
    received = 0

    async def body() -> float:
        nonlocal received
        driver = setup.driver()
        try:
            started = time.perf_counter()
            async for chunk in driver.read(f"blobs/{key}"):
                received += len(chunk)
            return time.perf_counter() - started
        finally:
            await driver.close()

    return run_async(body), received


def _launch(key: str, argv: list[str], env: dict[str, str], work: Path, port: int) -> Server:
    log = work / f"{key}.log"
    server = Server(key, port, work / f"{key}-data", log, spawn(argv, log, env))
    wait_ready(server, server.answers_v2, f"{key} did not answer /v2/")
    return server


def start_registry(work: Path, weed: SeaweedFS, *, redirect: bool = False) -> Server:
    """``moorage serve`` (its default 2 workers) storing blobs in the bucket, under "registry";
    with ``redirect``, under "registry-redirect", sending blob GETs to presigned URLs."""
    key = "registry-redirect" if redirect else "registry"
    port = free_port()
    env = {
        **os.environ,
        "MOORAGE_STORAGE_DRIVER": "s3",
        "MOORAGE_STORAGE_S3_ENDPOINT": weed.endpoint,
        "MOORAGE_STORAGE_S3_REGION": REGION,
        "MOORAGE_STORAGE_S3_BUCKET": BUCKET,
        "MOORAGE_STORAGE_S3_ACCESS_KEY": ACCESS_KEY,
        "MOORAGE_STORAGE_S3_SECRET_KEY": SECRET_KEY,
        "MOORAGE_STORAGE_S3_PREFIX": key,
        "MOORAGE_STORAGE_S3_REDIRECT": "true" if redirect else "false",
    }
    argv = [str(VENV_BIN / "moorage"), "serve", "--listen", f"127.0.0.1:{port}"]
    return _launch(key, [*argv, "--data", str(work / f"{key}-data")], env, work, port)


DISTRIBUTION_S3_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: {access_key}
    secretkey: {secret_key}
    region: {region}
    regionendpoint: {endpoint}
    bucket: {bucket}
    secure: false
    v4auth: true
    chunksize: {chunk}
    rootdirectory: /distribution
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
  secret: moorage-benchmark-secret
"""


def start_distribution(work: Path, weed: SeaweedFS, binary: str) -> Server:
    """Distribution with its S3 driver on the same bucket, under "distribution"."""
    port = free_port()
    config = work / "distribution-s3.yml"
    config.write_text(
        DISTRIBUTION_S3_CONFIG.format(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint=weed.endpoint,
            bucket=BUCKET,
            chunk=8 * MIB,
            port=port,
        )
    )
    # Its AWS SDK refuses to start when AWS_CA_BUNDLE names a bundle while it builds its own
    # HTTP transport; the store is plain HTTP anyway.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return _launch("distribution", [binary, "serve", str(config)], env, work, port)


def upload_registry(setup: Setup, key: str, registry: str = "registry") -> float:
    return monolithic_upload(setup.registries[registry], f"bench/{key}", setup.blob)


def download_registry(
    setup: Setup, key: str, registry: str = "registry", follow: bool = False
) -> tuple[float, int]:
    seconds = download(setup.registries[registry], f"bench/{key}", setup.blob, follow=follow)
    return seconds, setup.blob.size  # download() checked the status and the size


@dataclass(frozen=True)
class Client:
    label: str
    upload: Callable[[Setup, str], float] | None
    downloads: tuple[tuple[str, Callable[[Setup, str], tuple[float, int]]], ...]
    #: Where its uploads can be read back by the plain S3 clients (the driver's are not).
    plain_objects: bool = True


CLIENTS = {
    "boto3": Client(
        "boto3",
        upload_boto3,
        (("stream", download_boto3), ("parallel ranges", download_boto3_transfer)),
    ),
    "aioboto3": Client("aioboto3", upload_aioboto3, (("stream", download_aioboto3),)),
    "obstore": Client("obstore", upload_obstore, (("stream", download_obstore),)),
    "obstore-writes": Client("obstore, 1 MiB writes", upload_obstore_writes, ()),
    "driver": Client(
        "moorage S3 driver",
        upload_driver,
        (("read", download_driver),),
        plain_objects=False,
    ),
    "registry": Client(
        "registry on S3 (curl)",
        upload_registry,
        (("GET", download_registry),),
        plain_objects=False,
    ),
    "registry-redirect": Client(
        "registry on S3, redirects (curl -L)",
        partial(upload_registry, registry="registry-redirect"),
        (("GET", partial(download_registry, registry="registry-redirect", follow=True)),),
        plain_objects=False,
    ),
    "distribution": Client(
        "Distribution on S3 (curl)",
        partial(upload_registry, registry="distribution"),
        (("GET", partial(download_registry, registry="distribution")),),
        plain_objects=False,
    ),
}


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)

    def add(self, seconds: float, cpu: dict[str, float]) -> None:
        self.seconds.append(seconds)
        self.cpu.append(cpu)

    def cell(self, size: int) -> str:
        rates = [size / MIB / s for s in self.seconds]
        median = statistics.median(rates)
        return f"{median:.0f} ({min(rates):.0f}-{max(rates):.0f})"

    def median_rate(self, size: int) -> float:
        return statistics.median(size / MIB / s for s in self.seconds)

    def paired_ratio(self, reference: Result) -> float:
        """The median of this client's rate over the reference's in the same repeat (the two
        ran one after the other, so a machine that drifts moves both)."""
        return statistics.median(
            theirs / ours for ours, theirs in zip(self.seconds, reference.seconds, strict=False)
        )

    def cpu_cell(self, size: int) -> str:
        rates = [size / MIB / s for s in self.seconds]
        median = statistics.median(rates)
        closest = min(range(len(rates)), key=lambda i: abs(rates[i] - median))
        return "/".join(f"{pct:.0f}" for pct in self.cpu[closest].values())


def check_alive(weed: SeaweedFS) -> None:
    if weed.process.poll() is not None:
        tail = "\n".join(weed.logs().splitlines()[-20:])
        raise BenchmarkError(f"weed exited with {weed.process.returncode}:\n{tail}")


def measure(
    setup: Setup,
    wait_idle: float,
    pretouch: int,
    action: Callable[[], float],
    registry: Server | None,
) -> tuple[float, dict[str, float]]:
    """Time ``action`` on a quiet machine; CPU of weed, the registry (if the client is one)
    and this process + curl."""
    check_alive(setup.weed)
    quiesce(wait_idle, pretouch)
    registry_pid = registry.proc.pid if registry else setup.weed.process.pid
    with CpuMeter(setup.weed.process.pid) as weed, CpuMeter(registry_pid) as meter:
        seconds = action()
    check_alive(setup.weed)
    cpu = {"weed": weed.percent["server"], "registry": 0.0, "client": weed.percent["client"]}
    if registry is not None:
        registry.check_alive()
        cpu["registry"] = meter.percent["server"]
    return seconds, cpu


def check_size(setup: Setup, key: str) -> None:
    size = obstore.head(setup.obstore(), key)["size"]
    if size != setup.blob.size:
        raise BenchmarkError(f"{key}: stored {size} bytes, uploaded {setup.blob.size}")


def run(args: argparse.Namespace) -> None:
    chosen = [name for name in CLIENTS if name in args.clients]
    work = Path(tempfile.mkdtemp(prefix="moorage-s3-bench-"))
    weed: SeaweedFS | None = None
    registries: dict[str, Server] = {}
    try:
        print(f"writing a {args.size_mib} MiB random file", flush=True)
        blob = make_random_file(work / "blob", args.size_mib * MIB)
        weed = start_seaweedfs(work / "seaweedfs", buckets=(BUCKET,))
        if "registry" in chosen:
            registries["registry"] = start_registry(work, weed)
        if "registry-redirect" in chosen:
            registries["registry-redirect"] = start_registry(work, weed, redirect=True)
        if "distribution" in chosen:
            registries["distribution"] = start_distribution(work, weed, args.distribution)
        setup = Setup(weed, blob, args.part_mib * MIB, args.concurrency, registries)
        pretouch = args.pretouch_mib * MIB
        uploads: dict[str, Result] = {}
        downloads: dict[tuple[str, str], Result] = {}
        for index, name in alternating(chosen, args.repeat):
            client = CLIENTS[name]
            if client.upload is None:
                continue
            key = f"{name}-{index}"
            server = registries.get(name)
            seconds, cpu = measure(
                setup, args.wait_idle, pretouch, partial(client.upload, setup, key), server
            )
            if client.plain_objects:
                check_size(setup, key)
            uploads.setdefault(name, Result()).add(seconds, cpu)
            print(f"  {client.label} upload: {blob.size / MIB / seconds:.0f} MiB/s", flush=True)
            for how, download in client.downloads:
                received = 0

                def action(
                    read: Callable[[Setup, str], tuple[float, int]] = download, key: str = key
                ) -> float:
                    nonlocal received
                    took, received = read(setup, key)
                    return took

                seconds, cpu = measure(setup, args.wait_idle, 0, action, server)
                if received != blob.size:
                    raise BenchmarkError(f"{client.label} {how}: {received} of {blob.size} bytes")
                downloads.setdefault((name, how), Result()).add(seconds, cpu)
                print(
                    f"  {client.label} download ({how}): {blob.size / MIB / seconds:.0f} MiB/s",
                    flush=True,
                )
        print_table(setup, chosen, uploads, downloads)
    finally:
        for server in registries.values():
            server.stop()
        if weed is not None:
            weed.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_table(
    setup: Setup,
    chosen: list[str],
    uploads: dict[str, Result],
    downloads: dict[tuple[str, str], Result],
) -> None:
    size = setup.blob.size
    print(
        f"\n{size // MIB} MiB object, {setup.part // MIB} MiB parts, {setup.concurrency} in "
        "flight; MiB/s median (min-max); cpu: % of one core for weed/registry/client "
        "(this process and curl); x: vs boto3 (download: vs its single stream), from the "
        "medians; paired: median of the ratios within each repeat"
    )
    reference_up = uploads.get("boto3")
    reference_down = downloads.get(("boto3", "stream"))

    def ratios(result: Result, reference: Result | None) -> str:
        if reference is None:
            return f"{'':>6} {'':>6}"
        ratio = result.median_rate(size) / reference.median_rate(size)
        return f"{ratio:>6.2f} {result.paired_ratio(reference):>6.2f}"

    header = f"{'':34} {'MiB/s':>16} {'cpu':>11} {'x':>6} {'paired':>6}"
    print("upload" + header[6:])
    for name in chosen:
        if name in uploads:
            result = uploads[name]
            print(
                f"{CLIENTS[name].label:34} {result.cell(size):>16} "
                f"{result.cpu_cell(size):>11} {ratios(result, reference_up)}"
            )
    print("download" + header[8:])
    for (name, how), result in downloads.items():
        label = f"{CLIENTS[name].label} ({how})"
        print(
            f"{label:34} {result.cell(size):>16} {result.cpu_cell(size):>11} "
            f"{ratios(result, reference_down)}"
        )
    if "registry" in uploads and "distribution" in uploads:
        up = uploads["registry"].median_rate(size) / uploads["distribution"].median_rate(size)
        down = downloads[("registry", "GET")].median_rate(size) / downloads[
            ("distribution", "GET")
        ].median_rate(size)
        print(f"moorage / Distribution, both on S3: upload {up:.2f}x, download {down:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--wait-idle", type=float, default=30)
    parser.add_argument(
        "--pretouch-mib", type=int, default=2048, help="memory to touch before each upload"
    )
    parser.add_argument("--distribution", default="/usr/bin/docker-registry")
    parser.add_argument(
        "--clients", nargs="+", default=list(CLIENTS), choices=list(CLIENTS), metavar="CLIENT"
    )
    args = parser.parse_args()
    tools = ["curl", *([args.distribution] if "distribution" in args.clients else [])]
    if check_tools(tools):
        return 2
    return exit_status(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
