"""What the metrics cost a manifest GET by tag through HTTP: pairs of fresh moorage servers, one
with ``[metrics]`` on (``METRICS_ON``), one with them off (``METRICS_OFF``), both warmed up, then
loaded in turn by wrk and by ab in rounds of ``--metrics-seconds`` each, the order of the two
registries reversed from one round to the next; ``--metrics-rounds`` rounds per tool in all,
spread over ``--metrics-pairs`` pairs.

On a shared 2-core VM one run's throughput varies by ±15-20%, far more than the few percent
looked for, and the variation drifts over tens of seconds (other tenants, the host). So the runs
are short and many: each round pairs two adjacent runs, one of each registry, and the cost is
the median of the rounds' ratios, from which slow drift cancels out; the quartiles of the ratios
show how far to trust it. Beside throughput, the server CPU per request answered (from /proc),
which the load generator sharing the cores disturbs less.

Two processes running the same code also differ by themselves, by up to a few percent for their
whole life: where the allocator and the address space put things, and the seed of Python's
string hashing (which orders every dict's collisions). One pair of servers would carry its
own such difference into every round, so the rounds are spread over several pairs; the two
servers of a pair share a hash seed (``PYTHONHASHSEED``), each pair a new one.
``--metrics-placebo`` runs the same with the metrics off in both servers: what the method
finds where there is nothing to find."""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cpu import CpuMeter, quiesce
from errors import BenchmarkError
from load import load_output, parse_load
from report import aligned
from servers import METRICS_OFF, METRICS_ON, Server

#: The load generators, each with its own rounds.
TOOLS = ("wrk", "ab")
TARGET = "/v2/bench/image/manifests/latest"
#: Seconds of load on each registry before the rounds start.
WARMUP = 3


@dataclass(frozen=True)
class Run:
    """One run of one tool against one registry."""

    requests_s: float
    server_us: float  # server CPU per request answered
    failures: int  # socket errors and non-2xx answers


def _run(server: Server, tool: str, seconds: int, args: argparse.Namespace) -> Run:
    with CpuMeter(server.proc.pid) as cpu:
        output = load_output(tool, "GET", server.url(TARGET), seconds, args)
    server.check_alive()
    result = parse_load(tool, output)
    if result.requests == 0:
        raise BenchmarkError(f"{tool} against {server.label} completed no request")
    used = sum(cpu.server_processes.values())
    return Run(result.requests_s, 1e6 * used / result.requests, result.errors + result.non_2xx)


#: Starts a fresh server of a pair: (``METRICS_ON`` or ``METRICS_OFF``, the pair's number, its
#: hash seed), answering with ``bench/image:latest`` at ``TARGET``.
Starter = Callable[[str, int, int], Server]


def run_pairs(args: argparse.Namespace, start: Starter) -> dict[str, Any]:
    """For each tool, ``--metrics-rounds`` rounds of manifest GETs against a server with the
    metrics on and one with them off, over ``--metrics-pairs`` pairs of fresh servers, each
    pair stopped before the next starts; summarized by tool (``summarize``)."""
    runs: dict[str, dict[str, list[Run]]] = {
        tool: {METRICS_ON: [], METRICS_OFF: []} for tool in TOOLS
    }
    pairs: list[dict[str, Any]] = []
    for number, rounds in enumerate(_spread(args.metrics_rounds, args.metrics_pairs), 1):
        seed = random.randrange(2**32)
        print(f"  pair {number}: {rounds} rounds per tool, PYTHONHASHSEED={seed}")
        servers: dict[str, Server] = {}
        try:
            for key in (METRICS_ON, METRICS_OFF):
                servers[key] = start(key, number, seed)
            pair: dict[str, Any] = {"seed": seed, "rounds": rounds}
            for tool in TOOLS:
                on, off = _rounds(args, tool, rounds, servers[METRICS_ON], servers[METRICS_OFF])
                runs[tool][METRICS_ON] += on
                runs[tool][METRICS_OFF] += off
                pair[tool] = summarize(on, off)["throughput_cost_pct"]
            pairs.append(pair)
        finally:
            for server in servers.values():
                server.stop()
    results: dict[str, Any] = {
        tool: summarize(runs[tool][METRICS_ON], runs[tool][METRICS_OFF]) for tool in TOOLS
    }
    results["pairs"] = pairs
    results["placebo"] = args.metrics_placebo
    return results


def _spread(rounds: int, pairs: int) -> list[int]:
    """``rounds`` split over ``pairs`` as evenly as can be (no pair without a round)."""
    pairs = min(pairs, rounds)
    return [rounds // pairs + (1 if index < rounds % pairs else 0) for index in range(pairs)]


def _rounds(
    args: argparse.Namespace, tool: str, rounds: int, on: Server, off: Server
) -> tuple[list[Run], list[Run]]:
    """``rounds`` rounds of ``tool`` against ``on`` and ``off``, after a warm-up of each."""
    quiesce(args.wait_idle)
    for server in (on, off):
        _run(server, tool, WARMUP, args)
    first = "off (placebo)" if args.metrics_placebo else "metrics on"
    on_runs: list[Run] = []
    off_runs: list[Run] = []
    for index in range(rounds):
        order = ((on, on_runs), (off, off_runs))
        for server, runs in order if index % 2 == 0 else order[::-1]:
            runs.append(_run(server, tool, args.metrics_seconds, args))
        a, b = on_runs[-1], off_runs[-1]
        print(
            f"  {tool:<3} round {index + 1:>2}: {first} {a.requests_s:8.0f} req/s "
            f"{a.server_us:6.1f} us/req, off {b.requests_s:8.0f} req/s "
            f"{b.server_us:6.1f} us/req, ratio {a.requests_s / b.requests_s:.3f}"
        )
    return on_runs, off_runs


def _quartiles(values: list[float]) -> list[float]:
    return statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3


def summarize(on: list[Run], off: list[Run]) -> dict[str, Any]:
    """The rounds of one tool: the median of each registry's runs, the rounds' ratios (on/off)
    with their quartiles, and the cost they make in % (throughput lost, server CPU added)."""
    throughput = [a.requests_s / b.requests_s for a, b in zip(on, off, strict=True)]
    cpu = [a.server_us / b.server_us for a, b in zip(on, off, strict=True)]
    return {
        "on_requests_s": [r.requests_s for r in on],
        "off_requests_s": [r.requests_s for r in off],
        "on_server_us": [r.server_us for r in on],
        "off_server_us": [r.server_us for r in off],
        "throughput_ratios": throughput,
        "cpu_ratios": cpu,
        "throughput_quartiles": _quartiles(throughput),
        "cpu_quartiles": _quartiles(cpu),
        "throughput_cost_pct": 100 * (1 - statistics.median(throughput)),
        "cpu_cost_pct": 100 * (statistics.median(cpu) - 1),
        "failures": sum(r.failures for r in (*on, *off)),
    }


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The metrics cost, two rows per tool, and each pair's throughput cost."""
    placebo = results["placebo"]
    header = (
        "manifest GET by tag",
        "metrics off (2nd)" if placebo else "metrics on",
        "metrics off",
        "cost",
        "quartiles on/off",
    )
    rows: list[tuple[str, ...]] = []
    for tool in TOOLS:
        entry = results[tool]
        flag = " *" if entry["failures"] else ""
        for title, key, unit, cost in (
            ("req/s", "requests_s", "throughput", "throughput_cost_pct"),
            ("server CPU us/request", "server_us", "cpu", "cpu_cost_pct"),
        ):
            rows.append(
                (
                    f"{tool}: {title} (median)",
                    f"{statistics.median(entry[f'on_{key}']):.1f}{flag}",
                    f"{statistics.median(entry[f'off_{key}']):.1f}{flag}",
                    f"{entry[cost]:+.1f}%",
                    " ".join(f"{q:.3f}" for q in entry[f"{unit}_quartiles"]),
                )
            )
    out = aligned(header, rows)
    for tool in TOOLS:
        costs = " ".join(f"{pair[tool]:+.1f}%" for pair in results["pairs"])
        out.append(f"{tool} throughput cost by pair of servers: {costs}")
    out.append(
        f"Metrics cost: {args.metrics_rounds} rounds of {args.metrics_seconds}s per tool over "
        f"{len(results['pairs'])} pairs of fresh servers, each round a run of a moorage with "
        "[metrics] on and one of another with them off, the order reversed every round. Cost: "
        "the median of the rounds' ratios, as throughput lost and server CPU per request "
        "added; positive is a cost."
    )
    if placebo:
        out.append(
            "PLACEBO: both servers of every pair had the metrics off; the cost is the method's "
            "own error."
        )
    if any(results[tool]["failures"] for tool in TOOLS):
        out.append("* errors or non-2xx responses in some runs; see the JSON output.")
    return "\n".join(out)
