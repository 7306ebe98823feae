"""Turning measurements into the report: ``summarize`` reduces a transfer's samples to median,
min and max MiB/s plus the CPU split of the run closest to the median, and ``table`` prints
every metric side by side with the moorage/Distribution ratio, the CPU rows and the notes
that explain them (``*`` for errors, ``~`` for numbers disturbed by other processes). Both
benchmarks lay out their tables with ``aligned``, write CPU splits with ``cpu_split`` and
``per_process``, and end with ``print_and_save`` (the table, the wall time, the JSON file)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from load import LOAD_METRICS
from repeats import spread
from servers import LABELS
from transfers import Sample

#: Other processes' CPU (% of one core) above which a measurement is marked as disturbed.
DISTURBED_PCT = 25
#: How a CPU split is written: % of one core for each of these, in this order.
CPU_PARTS = ("server", "client", "other", "irq", "iowait")


def cpu_split(cpu: dict[str, float]) -> str:
    """``server/client/other/irq/iowait``, in whole % of one core."""
    return "/".join(f"{cpu[part]:.0f}" for part in CPU_PARTS)


def per_process(percents: Sequence[float]) -> str:
    """The CPU of each server process (supervisor, workers), in whole % of one core."""
    return "/".join(f"{pct:.0f}" for pct in percents)


def aligned(header: tuple[str, ...], *groups: Sequence[tuple[str, ...]]) -> list[str]:
    """The lines of a table: the first column left-aligned, the others right-aligned, a rule
    of dashes under the header and between the groups of rows."""
    rows = [header, *(row for group in groups for row in group)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(header)]
    for group in groups:
        out.append(rule)
        out += [line(row) for row in group]
    return out


def print_and_save(
    report: str,
    started: float,
    args: argparse.Namespace,
    *,
    environment: Callable[[], dict[str, Any]],
    busy_before_pct: float,
    results: dict[str, Any],
    setup: dict[str, Any] | None = None,
    derived: dict[str, Any] | None = None,
) -> None:
    """Print the table and the wall time since ``started``; with ``--json``, also write the
    arguments, ``environment()`` (asked only then), ``setup`` (what was run), the wall time,
    how busy the machine was before, the results, ``derived`` numbers and the table."""
    wall = time.perf_counter() - started
    print("\n" + report)
    print(f"\nwall time: {wall:.0f} s")
    if args.json:
        document = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": environment(),
            **(setup or {}),
            "wall_seconds": wall,
            "busy_before_pct": busy_before_pct,
            "results": results,
            **(derived or {}),
            "table": report,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")


def summarize(samples: list[Sample]) -> dict[str, Any]:
    rates = spread(samples, lambda s: s.mib_s)
    return {
        "median_mib_s": rates.median,
        "min_mib_s": rates.low,
        "max_mib_s": rates.high,
        "runs_mib_s": rates.rates,
        "runs_seconds": [s.seconds for s in samples],
        # CPU during the run closest to the median, in % of one core (200% = both cores).
        "cpu_pct": rates.closest.cpu,
        "runs_other_cpu_pct": [s.cpu["other"] for s in samples],
    }


def _ratio(values: dict[str, float]) -> str:
    if len(values) == 2 and values["distribution"]:
        return f"{values['moorage'] / values['distribution']:.2f}x"
    return "-"


def table(results: dict[str, Any], registries: list[str], args: argparse.Namespace) -> str:
    rows: list[tuple[str, ...]] = [
        ("metric", *(LABELS[k] for k in registries), "moorage/Distribution")
    ]
    flagged = disturbed = False

    def mark(other_pct: float) -> str:
        nonlocal disturbed
        if other_pct > DISTURBED_PCT:
            disturbed = True
            return " ~"
        return ""

    def transfer(metric: str, title: str) -> None:
        entry = results[metric]
        cells = [
            f"{entry[k]['median_mib_s']:.1f} ({entry[k]['min_mib_s']:.0f}-"
            f"{entry[k]['max_mib_s']:.0f}){mark(max(entry[k]['runs_other_cpu_pct']))}"
            for k in registries
        ]
        rows.append((title, *cells, _ratio({k: entry[k]["median_mib_s"] for k in registries})))

    def load_rows(metric: str, method: str, tool: str) -> None:
        nonlocal flagged
        entry = results[metric]
        cells = []
        for k in registries:
            bad = entry[k]["errors"] or entry[k]["non_2xx"]
            bad = bad or entry[k]["keepalive"] < entry[k]["requests"]
            flagged = flagged or bool(bad)
            cells.append(
                f"{entry[k]['requests_s']:.0f}{' *' if bad else ''}"
                f"{mark(entry[k]['cpu_pct']['other'])}"
            )
        rows.append(
            (
                f"manifest {method} by tag ({tool}), req/s",
                *cells,
                _ratio({k: entry[k]["requests_s"] for k in registries}),
            )
        )
        rows.append(
            (
                f"manifest {method} by tag ({tool}), p99 ms",
                *(f"{entry[k]['p99_ms']:.2f}" for k in registries),
                _ratio({k: entry[k]["p99_ms"] for k in registries}),
            )
        )

    size = f"{args.size_mib} MiB"
    transfer("upload", f"upload {size} monolithic, MiB/s")
    transfer("download", f"download {size} (curl), MiB/s")
    transfer("download_python", f"download {size} (Python), MiB/s")
    transfer("chunked_upload", f"upload {args.chunked_mib} MiB chunked {args.chunk_mib} MiB, MiB/s")
    for metric, method, tool in LOAD_METRICS:
        load_rows(metric, method, tool)

    cpu_rows: list[tuple[str, ...]] = []
    for metric, title in (
        ("upload", "upload monolithic"),
        ("download", "download (curl)"),
        ("download_python", "download (Python)"),
        ("chunked_upload", "upload chunked"),
        *((metric, f"manifest {method} ({tool})") for metric, method, tool in LOAD_METRICS),
    ):
        cpu_rows.append(
            (
                f"CPU % srv/client/other/irq/iowait: {title}",
                *(cpu_split(results[metric][k]["cpu_pct"]) for k in registries),
                "",
            )
        )

    out = [*aligned(rows[0], rows[1:], cpu_rows), ""]
    out.append(
        f"Transfers: median (min-max) of {args.repeat} runs ({args.download_repeat} for "
        f"downloads), MiB/s = 2^20 bytes/s; {args.pretouch_mib} MiB of memory pre-touched "
        "before each upload (--pretouch-mib). "
        "CPU % of one core (200% = both), run closest to the median: server process tree, "
        "client (curl/wrk/ab/Python), other processes on the machine, interrupts (loopback "
        "networking's softirq), iowait."
    )
    out.append(
        "p99 latency: lower is better (the ratio is moorage/Distribution all the same); "
        "ab reports whole milliseconds."
    )
    if flagged:
        out.append(
            "* errors, non-2xx responses or connections not kept alive; see the JSON output."
        )
    if disturbed:
        out.append(
            f"~ other processes used more than {DISTURBED_PCT}% of a core during (one of) "
            "these runs: the machine was shared, the number is disturbed."
        )
    return "\n".join(out)
