"""The garbage collection benchmark's HTTP client, on asyncio and aiohttp over keep-alive
connections. ``push_image`` pushes an image (each blob by ``POST`` then ``PUT ?digest=``, then
its manifest by tag) and ``pull_image`` pulls one whole, checking every digest; ``push_all``
and ``delete_all`` set a registry up ``concurrency`` at a time; ``Load`` runs paced pushers of
new images and pullers of kept images until told to stop, timing each image; ``verify_pulls``
and ``blobs_absent`` check a registry after collection."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from errors import BenchmarkError
from gc_workload import Blob, Image, make_image
from manifest_client import bounded
from registry_http import OCI_MANIFEST, target_of, with_digest
from servers import Server

#: How many failed pulls are described in full (the rest are counted).
FAILURES_KEPT = 20


def session(server: Server, concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(server.base, connector=connector, timeout=timeout)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


async def push_blob(
    http: aiohttp.ClientSession, server: Server, repository: str, data: bytes, digest: str
) -> None:
    async with http.post(f"/v2/{repository}/blobs/uploads/", data=b"") as response:
        await response.read()
        if response.status != 202:
            raise BenchmarkError(f"{server.label}: POST upload answered {response.status}")
        target = target_of(server, response.headers.get("Location"))
    async with http.put(
        with_digest(target, digest),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    ) as response:
        body = await response.read()
        if response.status != 201:
            raise BenchmarkError(
                f"{server.label}: PUT blob {digest} answered {response.status}: {body[:200]!r}"
            )


async def push_image(http: aiohttp.ClientSession, server: Server, image: Image) -> None:
    """Push the image's blobs, then its manifest by tag; BenchmarkError on any other answer
    than 202/201 or a wrong digest."""
    for data, blob in zip(image.contents(), image.blobs, strict=True):
        await push_blob(http, server, image.repository, data, blob.digest)
    async with http.put(
        f"/v2/{image.repository}/manifests/{image.tag}",
        data=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    ) as response:
        body = await response.read()
        digest = response.headers.get("Docker-Content-Digest")
    if response.status != 201 or digest != image.digest:
        raise BenchmarkError(
            f"{server.label}: PUT manifest {image.repository}:{image.tag} answered "
            f"{response.status} (digest {digest}, expected {image.digest}): {body[:300]!r}"
        )


async def pull_image(http: aiohttp.ClientSession, image: Image) -> str | None:
    """Pull the manifest by tag and every blob; None if all came whole, else what was wrong."""
    where = f"{image.repository}:{image.tag}"
    try:
        async with http.get(
            f"/v2/{image.repository}/manifests/{image.tag}", headers={"Accept": OCI_MANIFEST}
        ) as response:
            body = await response.read()
            said = response.headers.get("Docker-Content-Digest")
        if response.status != 200:
            return f"{where}: GET manifest answered {response.status}: {body[:200]!r}"
        if said != image.digest or body != image.manifest:
            return f"{where}: manifest {said} (sha256 {sha256_hex(body)}), not {image.digest}"
        for blob in image.blobs:
            async with http.get(f"/v2/{image.repository}/blobs/{blob.digest}") as response:
                data = await response.read()
            if response.status != 200:
                return f"{where}: GET blob {blob.digest} answered {response.status}"
            if len(data) != blob.size or "sha256:" + sha256_hex(data) != blob.digest:
                return f"{where}: blob {blob.digest} came as {len(data)} other bytes"
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"{where}: {type(exc).__name__}: {exc}"
    return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def push_all(server: Server, images: Sequence[Image], concurrency: int) -> float:
    """Push ``images`` ``concurrency`` at a time; the seconds it took."""
    async with session(server, concurrency) as http:
        start = time.perf_counter()
        await bounded(images, concurrency, lambda image: push_image(http, server, image))
        return time.perf_counter() - start


async def delete_all(server: Server, images: Sequence[Image], concurrency: int) -> float:
    """``DELETE /v2/<name>/manifests/<digest>`` of each image (202), then check that its tag
    is gone (404); the seconds the deletions took."""

    async def delete(http: aiohttp.ClientSession, image: Image) -> None:
        async with http.delete(f"/v2/{image.repository}/manifests/{image.digest}") as response:
            body = await response.read()
        if response.status != 202:
            raise BenchmarkError(
                f"{server.label}: DELETE manifest {image.repository}@{image.digest} answered "
                f"{response.status}: {body[:200]!r}"
            )

    async def gone(http: aiohttp.ClientSession, image: Image) -> None:
        async with http.head(
            f"/v2/{image.repository}/manifests/{image.tag}", headers={"Accept": OCI_MANIFEST}
        ) as response:
            await response.read()
        if response.status != 404:
            raise BenchmarkError(
                f"{server.label}: tag {image.repository}:{image.tag} answered "
                f"{response.status} after its manifest was deleted"
            )

    async with session(server, concurrency) as http:
        start = time.perf_counter()
        await bounded(images, concurrency, lambda image: delete(http, image))
        seconds = time.perf_counter() - start
        await bounded(images, concurrency, lambda image: gone(http, image))
    return seconds


Span = tuple[float, float]


def overlapping(spans: Sequence[Span], windows: Sequence[Span]) -> list[float]:
    """The durations of the ``spans`` (start, end) that overlap any of the ``windows``."""
    return [
        end - start
        for start, end in spans
        if any(start < w_end and end > w_start for w_start, w_end in windows)
    ]


@dataclass
class LoadResult:
    """What the load clients did in one phase: when each image pushed or pulled whole was
    sent and done (``perf_counter``), the images pushed, the failures (counted; the first
    few described), and the CPU meanwhile."""

    seconds: float = 0.0
    push_spans: list[Span] = field(default_factory=list)
    pull_spans: list[Span] = field(default_factory=list)
    pushed: list[Image] = field(default_factory=list)
    push_failures: int = 0
    pull_failures: int = 0
    failures: list[str] = field(default_factory=list)
    #: CPU during the phase, % of one core, as ``cpu.CpuMeter`` splits it.
    cpu: dict[str, float] = field(default_factory=dict)

    def failed(self, what: str) -> None:
        if len(self.failures) < FAILURES_KEPT:
            self.failures.append(what)

    def summary(self, windows: Sequence[Span] = ()) -> dict[str, Any]:
        """Counts, rates and latencies (ms); with ``windows``, also the latencies of the
        images under way during them (``while_*``)."""

        def ms(values: list[float], pct: float) -> float:
            return 1000 * percentile(values, pct)

        pushes = [end - start for start, end in self.push_spans]
        pulls = [end - start for start, end in self.pull_spans]
        summary = {
            "seconds": self.seconds,
            "pushes": len(pushes),
            "pushes_per_s": len(pushes) / self.seconds if self.seconds else 0.0,
            "push_failures": self.push_failures,
            "push_p50_ms": ms(pushes, 50),
            "push_p99_ms": ms(pushes, 99),
            "push_max_ms": ms(pushes, 100),
            "pulls": len(pulls) + self.pull_failures,
            "pulls_per_s": len(pulls) / self.seconds if self.seconds else 0.0,
            "pull_p50_ms": ms(pulls, 50),
            "pull_p99_ms": ms(pulls, 99),
            "pull_failures": self.pull_failures,
            "failures": self.failures,
            "cpu_pct": self.cpu,
        }
        if windows:
            pushes, pulls = (
                overlapping(self.push_spans, windows),
                overlapping(self.pull_spans, windows),
            )
            summary["while"] = {
                "windows": [list(window) for window in windows],
                "pushes": len(pushes),
                "push_p50_ms": ms(pushes, 50),
                "push_p99_ms": ms(pushes, 99),
                "pulls": len(pulls),
                "pull_p50_ms": ms(pulls, 50),
                "pull_p99_ms": ms(pulls, 99),
            }
        return summary


@dataclass
class LoadShape:
    """Paced clients: ``pushers`` pushing new images at ``push_rate`` images/s in all,
    ``pullers`` pulling kept images at ``pull_rate`` images/s in all (0: as fast as they can)."""

    pushers: int
    push_rate: float
    pullers: int
    pull_rate: float


class Load:
    """Load clients on one registry. ``run`` starts them and returns when ``stop`` is set
    (images under way finish). New images take indices from ``next_index`` on (shared by the
    phases, so that they never push the same image twice)."""

    def __init__(
        self,
        server: Server,
        shape: LoadShape,
        kept: Sequence[Image],
        next_index: int,
        layers: int,
        layer_kib: int,
    ) -> None:
        self.server = server
        self.shape = shape
        self.kept = kept
        self.next_index = next_index
        self.layers = layers
        self.layer_kib = layer_kib
        self.random = random.Random(1)

    async def run(self, stop: asyncio.Event) -> LoadResult:
        result = LoadResult()
        shape = self.shape
        async with session(self.server, shape.pushers + shape.pullers) as http:
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    self._paced(stop, shape.pushers, shape.push_rate, self._push(http, result))
                    for _ in range(shape.pushers)
                ),
                *(
                    self._paced(stop, shape.pullers, shape.pull_rate, self._pull(http, result))
                    for _ in range(shape.pullers)
                ),
            )
            result.seconds = time.perf_counter() - start
        return result

    @staticmethod
    async def _paced(
        stop: asyncio.Event, clients: int, rate: float, once: Callable[[], Any]
    ) -> None:
        """Call ``once`` every ``clients / rate`` seconds (at once if it is late) until
        ``stop`` is set."""
        interval = clients / rate if rate > 0 else 0.0
        due = time.perf_counter() + random.random() * interval  # spread the clients out
        while not stop.is_set():
            wait = due - time.perf_counter()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return
                except TimeoutError:
                    pass
            await once()
            due = max(due + interval, time.perf_counter())

    def _push(self, http: aiohttp.ClientSession, result: LoadResult) -> Callable[[], Any]:
        async def once() -> None:
            image = make_image(self.next_index, self.layers, self.layer_kib)
            self.next_index += 1
            image.blobs  # noqa: B018 (make the content before the clock starts)
            start = time.perf_counter()
            try:
                await push_image(http, self.server, image)
            except (TimeoutError, BenchmarkError, aiohttp.ClientError) as exc:
                result.push_failures += 1
                result.failed(f"push {image.repository}:{image.tag}: {exc}")
                return
            result.push_spans.append((start, time.perf_counter()))
            result.pushed.append(image)

        return once

    def _pull(self, http: aiohttp.ClientSession, result: LoadResult) -> Callable[[], Any]:
        async def once() -> None:
            image = self.random.choice(self.kept)
            start = time.perf_counter()
            failure = await pull_image(http, image)
            if failure is None:
                result.pull_spans.append((start, time.perf_counter()))
            else:
                result.pull_failures += 1
                result.failed(failure)

        return once


async def verify_pulls(
    server: Server, images: Sequence[Image], concurrency: int
) -> tuple[int, list[str]]:
    """Pull every image whole; (images that failed, the first failures)."""
    failures: list[str] = []
    count = 0

    async def pull(http: aiohttp.ClientSession, image: Image) -> None:
        nonlocal count
        failure = await pull_image(http, image)
        if failure is not None:
            count += 1
            if len(failures) < FAILURES_KEPT:
                failures.append(failure)

    async with session(server, concurrency) as http:
        await bounded(images, concurrency, lambda image: pull(http, image))
    return count, failures


async def blobs_absent(
    server: Server, blobs: Sequence[tuple[str, Blob]], concurrency: int
) -> tuple[int, list[str]]:
    """``HEAD /v2/<name>/blobs/<digest>`` of each (repository, blob): (how many answered
    404, what the others answered, the first few)."""
    absent = 0
    others: list[str] = []

    async def head(http: aiohttp.ClientSession, item: tuple[str, Blob]) -> None:
        nonlocal absent
        repository, blob = item
        async with http.head(f"/v2/{repository}/blobs/{blob.digest}") as response:
            await response.read()
        if response.status == 404:
            absent += 1
        elif len(others) < FAILURES_KEPT:
            others.append(f"{repository}@{blob.digest}: HEAD answered {response.status}")

    async with session(server, concurrency) as http:
        await bounded(blobs, concurrency, lambda item: head(http, item))
    return absent, others
