"""What the metrics cost a manifest GET by tag through HTTP: two fresh moorage servers, one with
``[metrics]`` on (``METRICS_ON``), one with them off (``METRICS_OFF``), both warmed up, then
loaded in turn by wrk and by ab in ``--metrics-rounds`` rounds of ``--metrics-seconds`` each,
the order of the two registries reversed from one round to the next.

On a shared 2-core VM one run's throughput varies by ±15-20%, far more than the few percent
looked for, and the variation drifts over tens of seconds (other tenants, the host). So the runs
are short and many: each round pairs two adjacent runs, one of each registry, and the cost is
the median of the rounds' ratios, from which slow drift cancels out; the quartiles of the ratios
show how far to trust it. Beside throughput, the server CPU per request answered (from /proc),
which the load generator sharing the cores disturbs less."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Any

from cpu import CpuMeter, quiesce
from errors import BenchmarkError
from load import load_output, parse_load
from report import aligned
from servers import Server

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


def run_rounds(args: argparse.Namespace, on: Server, off: Server) -> dict[str, Any]:
    """For each tool, ``--metrics-rounds`` rounds of manifest GETs against ``on`` and ``off``
    (both have ``bench/image:latest``), summarized (``summarize``)."""
    results = {}
    for tool in TOOLS:
        quiesce(args.wait_idle)
        for server in (on, off):
            _run(server, tool, WARMUP, args)
        runs: dict[str, list[Run]] = {on.key: [], off.key: []}
        for index in range(args.metrics_rounds):
            order = (on, off) if index % 2 == 0 else (off, on)
            for server in order:
                runs[server.key].append(_run(server, tool, args.metrics_seconds, args))
            a, b = runs[on.key][-1], runs[off.key][-1]
            print(
                f"  {tool:<3} round {index + 1:>2}: metrics on {a.requests_s:8.0f} req/s "
                f"{a.server_us:6.1f} us/req, off {b.requests_s:8.0f} req/s "
                f"{b.server_us:6.1f} us/req, ratio {a.requests_s / b.requests_s:.3f}"
            )
        results[tool] = summarize(runs[on.key], runs[off.key])
    return results


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
    """The metrics cost, two rows per tool."""
    header = ("manifest GET by tag", "metrics on", "metrics off", "cost", "quartiles on/off")
    rows: list[tuple[str, ...]] = []
    for tool, entry in results.items():
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
    out.append(
        f"Metrics cost: {args.metrics_rounds} rounds of {args.metrics_seconds}s per tool, each "
        "a run of a fresh moorage with [metrics] on and one of another with them off, "
        "the order reversed every round. Cost: the median of the rounds' ratios, as "
        "throughput lost and server CPU per request added; positive is a cost."
    )
    if any(entry["failures"] for entry in results.values()):
        out.append("* errors or non-2xx responses in some runs; see the JSON output.")
    return "\n".join(out)
