"""What tag policy checks and tag history recording cost on manifest PUT throughput.

The entry point: it checks out the baseline, the parent of the commit "Tag policies and tag
history in the metadata store" (``baseline.py``), then runs three registries one at a time,
each started fresh on 127.0.0.1 with its own data directory: the baseline (neither policy
checks nor history), the current code with the default policy (no rules; history is still
recorded) and the current code with six rules. Each gets the same workload
(``policy_workload.py``: seed tags, a warm-up, then ``--manifests`` PUTs by tag of small
distinct manifests over ``--concurrency`` connections), timed and checked by ``policy_run.py``;
this module repeats the runs in alternating order, summarises them, prints the table and can
keep every number in a JSON file (``report.py``). README.md says what is measured and how.
Usage: .venv/bin/python benchmarks/tag_policy.py [--manifests 3000] [--concurrency 16]
       [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from baseline import PYTHON, baseline_revision, checked_out, moorage_location, write_launcher
from checkout import ROOT, describe
from cpu import machine_busy_percent
from errors import exit_status
from policy_run import RunResult, Variant, run_variant
from policy_workload import POLICY, RULE_NAMES, Plan, make_plan, mix
from repeats import alternating, spread
from report import DISTURBED_PCT, aligned, cpu_split, per_process, print_and_save


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    rates = spread(runs, lambda r: r.requests_s)

    def cpu_ms_per_put(part: str) -> float:
        return statistics.median(10 * r.cpu[part] / r.requests_s for r in runs)

    return {
        "median_requests_s": rates.median,
        "min_requests_s": rates.low,
        "max_requests_s": rates.high,
        "median_p50_ms": statistics.median(r.p50_ms for r in runs),
        "median_p99_ms": statistics.median(r.p99_ms for r in runs),
        # Per request, from the run closest to the median.
        "cpu_pct": rates.closest.cpu,
        "process_cpu_pct": rates.closest.processes,
        "server_cpu_ms_per_put": cpu_ms_per_put("server"),
        "client_cpu_ms_per_put": cpu_ms_per_put("client"),
        "disk_per_put": rates.closest.disk,
        "disturbed": max(r.cpu["other"] for r in runs) > DISTURBED_PCT,
        "runs": [r.to_json() for r in runs],
    }


def paired_costs(runs: dict[str, list[RunResult]]) -> dict[str, list[float]]:
    """Each repeat's run against the same repeat's baseline, in % fewer req/s: slow drift of
    the machine (this VM's disk latency wanders) cancels out of the pairs."""
    return {
        key: [
            100 * (1 - r.requests_s / b.requests_s)
            for r, b in zip(results, runs["baseline"], strict=True)
        ]
        for key, results in runs.items()
    }


def table(
    variants: list[Variant], summary: dict[str, dict[str, Any]], args: argparse.Namespace
) -> str:
    base = summary["baseline"]
    header = ("metric", *(v.label for v in variants))
    rows: list[tuple[str, ...]] = []

    def row(title: str, cell: Callable[[dict[str, Any]], str]) -> None:
        rows.append((title, *(cell(summary[v.key]) for v in variants)))

    def overhead(s: dict[str, Any]) -> str:
        if s is base:
            return "-"
        return f"{100 * (1 - s['median_requests_s'] / base['median_requests_s']):+.1f}%"

    row(
        "manifest PUT by tag, req/s",
        lambda s: (
            f"{s['median_requests_s']:.0f} ({s['min_requests_s']:.0f}-"
            f"{s['max_requests_s']:.0f}){' ~' if s['disturbed'] else ''}"
        ),
    )
    row("throughput cost vs baseline", overhead)
    row(
        "  same, median of paired runs",
        lambda s: "-" if s is base else f"{statistics.median(s['paired_cost_pct']):+.1f}%",
    )
    row("latency p50, ms", lambda s: f"{s['median_p50_ms']:.2f}")
    row("latency p99, ms", lambda s: f"{s['median_p99_ms']:.2f}")
    row("server CPU per PUT, ms", lambda s: f"{s['server_cpu_ms_per_put']:.2f}")
    row("client CPU per PUT, ms", lambda s: f"{s['client_cpu_ms_per_put']:.2f}")
    row("CPU % srv/client/other/irq/iowait", lambda s: cpu_split(s["cpu_pct"]))
    row("CPU % by server process", lambda s: per_process(s["process_cpu_pct"]))
    if all(s["disk_per_put"] for s in summary.values()):
        row("disk writes per PUT", lambda s: f"{s['disk_per_put']['writes']:.2f}")
        row("disk KiB written per PUT", lambda s: f"{s['disk_per_put']['kib_written']:.1f}")
        if all("flushes" in s["disk_per_put"] for s in summary.values()):
            row("disk flushes per PUT", lambda s: f"{s['disk_per_put']['flushes']:.2f}")
            row("disk flush ms per PUT", lambda s: f"{s['disk_per_put']['flush_ms']:.2f}")

    out = [*aligned(header, rows), ""]
    out.append(
        f"{args.manifests} PUTs by tag of distinct small manifests per run over "
        f"{args.concurrency} connections, after {args.warmup} warm-up PUTs; median (min-max) of "
        f"{args.repeat} runs, each on a fresh registry ({args.workers} "
        f"worker{'s' if args.workers > 1 else ''}, own data directory). "
        "Throughput cost: how many fewer req/s than the baseline, from the medians, and the "
        "median of each repeat's run against that repeat's baseline (the issue's budget: <10%). "
        "CPU % of one core (200% = both), run closest to the median; CPU per PUT: median of "
        "the runs. Disk: the data directory's block device, per timed PUT."
    )
    if any(s["disturbed"] for s in summary.values()):
        out.append(
            f"~ other processes used more than {DISTURBED_PCT}% of a core during a run: "
            "the machine was shared, the number is disturbed."
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=3000, help="timed PUTs per run")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per registry (default 3)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed PUTs before each run")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60,
        help="before each run wait up to this many seconds for the machine to be idle",
    )
    parser.add_argument(
        "--pretouch-mib",
        type=int,
        default=0,
        help="before each timed run, write and free this much memory (see README.md)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="moorage worker processes (default 2)"
    )
    parser.add_argument(
        "--baseline-code",
        type=Path,
        help="a source tree to run as the baseline instead of the revision before tag policies",
    )
    parser.add_argument("--tmpdir", type=Path, help="where to create the work directory")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.manifests, args.concurrency, args.repeat, args.workers) < 1 or args.warmup < 0:
        parser.error("--manifests, --concurrency, --repeat and --workers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not PYTHON.exists():
        print(f"error: {PYTHON} not found (make serve creates the venv)", file=sys.stderr)
        return 2
    return exit_status(lambda: benchmark(args))


def launchers(variants: list[Variant], work: Path, workers: int) -> dict[str, Path]:
    """A launcher script per variant, after checking which code each one imports."""
    cwd = work / "cwd"
    cwd.mkdir()
    scripts: dict[str, Path] = {}
    for variant in variants:
        location = moorage_location(variant.code, cwd, variant.label)
        print(f"{variant.label:<26} runs {location}")
        path = work / f"moorage-{variant.key}.sh"
        scripts[variant.key] = write_launcher(path, variant.code, cwd, workers)
    return scripts


def repeated_runs(
    variants: list[Variant],
    plan: Plan,
    scripts: dict[str, Path],
    work: Path,
    args: argparse.Namespace,
) -> dict[str, list[RunResult]]:
    """``--repeat`` runs of each variant, in alternating order, each printed as it ends (the
    first repeat with the lines its checks returned)."""
    runs: dict[str, list[RunResult]] = {v.key: [] for v in variants}
    by_key = {v.key: v for v in variants}
    for index, key in alternating(list(by_key), args.repeat):
        variant = by_key[key]
        result = run_variant(variant, plan, scripts[key], work, args)
        runs[key].append(result)
        print(
            f"  run {index + 1} {variant.label:<24} {result.requests_s:7.0f} req/s  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
            f"CPU % server {result.cpu['server']:.0f} client {result.cpu['client']:.0f} "
            f"iowait {result.cpu['iowait']:.0f}"
        )
        if index == 0:
            for check in result.checks:
                print(f"      ok: {check}")
    return runs


def benchmark(args: argparse.Namespace) -> None:
    """Check out the baseline, run every variant ``--repeat`` times, clean up, report."""
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="moorage-tag-policy-", dir=args.tmpdir))
    try:
        introduced, baseline = baseline_revision()
        if args.baseline_code is not None:
            baseline = f"tree {args.baseline_code}"
        else:
            print(f"tag policies came with {introduced[:10]}; baseline: its parent {baseline[:10]}")
        with contextlib.ExitStack() as stack:
            worktree = args.baseline_code or stack.enter_context(
                checked_out(baseline, work / "baseline-src")
            )
            label = "baseline tree" if args.baseline_code else f"baseline {baseline[:7]}"
            variants = [
                Variant(
                    "baseline",
                    label,
                    worktree,
                    rules=False,
                    pre_policy=not args.baseline_code,
                    checked=not args.baseline_code,
                ),
                Variant("default", "current, default policy", ROOT, rules=False),
                Variant("rules", f"current, {len(RULE_NAMES)} rules", ROOT, rules=True),
            ]
            scripts = launchers(variants, work, args.workers)
            plan = make_plan(args.manifests, args.warmup)
            print(f"workload mix (rule: pushes by kind): {mix(plan.timed)}")
            busy = machine_busy_percent()
            print(f"machine busy before the run: {busy:.0f}% of one core")
            runs = repeated_runs(variants, plan, scripts, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {key: summarize(results) for key, results in runs.items()}
    for key, costs in paired_costs(runs).items():
        summary[key]["paired_cost_pct"] = costs
    base = summary["baseline"]["median_requests_s"]
    print_and_save(
        table(variants, summary, args),
        started,
        args,
        environment=lambda: {
            "policy_commit": introduced,
            "baseline": baseline,
            "current": describe(),
            "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__,
            "cpus": os.cpu_count(),
        },
        busy_before_pct=busy,
        results=summary,
        setup={"policy": POLICY, "workload_mix": mix(plan.timed)},
        derived={
            "overhead_pct": {
                key: 100 * (1 - s["median_requests_s"] / base)
                for key, s in summary.items()
                if key != "baseline"
            }
        },
    )


if __name__ == "__main__":
    sys.exit(main())
