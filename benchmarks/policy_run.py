"""One measured run of the tag policy benchmark: ``run_variant`` starts a fresh registry of a
``Variant`` (the baseline, the current code, the current code with rules) in a data directory
of its own, installs the policy if it has rules, uploads the blobs the manifests reference,
pushes the seed tags and the warm-up, waits for a quiet machine, times the PUTs while
measuring CPU and disk writes, runs the checks, and returns a ``RunResult``."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cpu import CpuMeter, quiesce
from disk import disk_counters, disk_device, disk_per_request
from errors import BenchmarkError
from manifest_client import put_all
from policy_checks import (
    check_code,
    check_decisions,
    check_history,
    check_outcomes,
    check_refusals,
    check_tags,
)
from policy_workload import POLICY, REPOSITORIES, RULE_NAMES, Plan, blobs_of
from registry_http import push_blob, request
from servers import Server, start_server


@dataclass(frozen=True)
class Variant:
    """A registry to compare: ``code`` is the directory its ``moorage`` package is imported
    from; ``rules``: whether it gets ``POLICY`` before the run; ``pre_policy``: code from
    before tag policies existed (it must not answer the extension); ``checked``: whether its
    tag history is checked (not for a tree given with --baseline-code, which may differ)."""

    key: str
    label: str
    code: Path
    rules: bool
    pre_policy: bool = False
    checked: bool = True

    @property
    def policy_rules(self) -> list[str] | None:
        """The rules its policy must have; None for code that has no policies."""
        if self.pre_policy:
            return None
        return RULE_NAMES if self.rules else []


@dataclass
class RunResult:
    """The timed PUTs of one run: rate, latency, CPU (% of one core, as ``CpuMeter``; and per
    server process), disk counters per PUT (None if the data is not on a block device), and
    the lines the checks returned."""

    requests: int
    seconds: float
    requests_s: float
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]
    processes: list[float]
    disk: dict[str, float] | None
    checks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "requests_s": self.requests_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "cpu_pct": self.cpu,
            "process_cpu_pct": self.processes,
            "disk_per_put": self.disk,
            "checks": self.checks,
        }


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # nearest rank
    return ordered[int(rank) - 1]


async def exercise(
    server: Server, variant: Variant, plan: Plan, args: argparse.Namespace
) -> RunResult:
    """Push the plan to a registry that has its blobs, time and check; see the module."""
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(server.base, connector=connector, timeout=timeout) as session:
        checks = [await check_code(session, variant.label, variant.policy_rules)]
        # Untimed: tags to re-push, and a warm-up over the same connections.
        seeded = await put_all(session, plan.seeds, args.concurrency)
        check_outcomes(seeded, "seed")
        warm = await put_all(session, plan.warmup, args.concurrency)
        check_outcomes(warm, "warm-up")

        await asyncio.to_thread(quiesce, args.wait_idle, args.pretouch_mib << 20)
        server.check_alive()
        device = disk_device(server.data)
        disk_before = disk_counters(device)
        with CpuMeter(server.proc.pid) as cpu:
            timed = await put_all(session, plan.timed, args.concurrency)
        disk_after = disk_counters(device)
        server.check_alive()

        check_outcomes(timed, "timed")
        checks.append(f"{len(timed)} timed PUTs answered 201 with the pushed digest")
        every = [*seeded, *warm, *timed]
        checks.append(await check_tags(session, every, args.concurrency))
        if variant.policy_rules is not None and variant.checked:  # pre-policy code keeps none
            checks.append(await check_history(session, every))
        if variant.rules:  # after the timed loop, so all three do the same before it
            checks.append(await check_decisions(session, [*plan.seeds, *plan.timed], 32))
            checks.append(await check_refusals(session, plan))

    seconds = max(o.end for o in timed) - min(o.start for o in timed)
    latencies = [1000 * (o.end - o.start) for o in timed]
    return RunResult(
        requests=len(timed),
        seconds=seconds,
        requests_s=len(timed) / seconds,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        cpu=cpu.percent,
        processes=[100 * used / seconds for used in cpu.server_processes.values()],
        disk=disk_per_request(disk_before, disk_after, len(timed)),
        checks=checks,
    )


def run_variant(
    variant: Variant, plan: Plan, launcher: Path, work: Path, args: argparse.Namespace
) -> RunResult:
    """Start a fresh registry of ``variant``, set it up, measure, check, stop it."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant.key}-", dir=work))
    server = start_server("moorage", run_dir, launcher, "")
    try:
        if variant.rules:
            status, _, body = request(
                server,
                "PUT",
                "/v2/_moorage/policy/rules",
                json.dumps(POLICY).encode(),
                {"Content-Type": "application/json"},
            )
            if status != 200:
                raise BenchmarkError(f"PUT policy/rules answered {status}: {body[:300]!r}")
        for repository in REPOSITORIES:  # the referenced blobs, once per repository
            for blob in blobs_of(repository):
                push_blob(server, repository, blob)
        return asyncio.run(exercise(server, variant, plan, args))
    except BenchmarkError as exc:
        raise BenchmarkError(f"{variant.label}: {exc}\n{server.log_tail()}") from None
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
