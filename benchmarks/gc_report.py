"""The garbage collection benchmark's report: ``table`` puts the two registries side by side
(with the moorage/Distribution ratio where both have a number) and explains the rows below it;
``targets`` says whether moorage met the benchmark's targets: at least 95% of the unreferenced
bytes reclaimed, no failed pull of a kept image during collection, every kept image whole
afterwards."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gc_workload import REPOSITORIES, Population
from report import DISTURBED_PCT, aligned, cpu_split
from servers import LABELS

#: Share of the unreferenced bytes a collection must reclaim.
RECLAIM_TARGET = 0.95

Cell = Callable[[dict[str, Any]], str]
Number = Callable[[dict[str, Any]], float]


def mib(count: float) -> str:
    return f"{count / 2**20:.1f}"


def table(
    results: dict[str, Any],
    registries: list[str],
    population: Population,
    args: argparse.Namespace,
) -> str:
    both = len(registries) == 2
    disturbed = False

    def mark(r: dict[str, Any], *phases: str) -> str:
        """`` ~`` if other processes used more than DISTURBED_PCT of a core in a phase."""
        nonlocal disturbed
        for phase in phases:
            cpu = r.get(phase) or {}
            cpu = cpu.get("cpu_pct", {}) if "cpu_pct" in cpu else cpu
            if cpu.get("other", 0.0) > DISTURBED_PCT:
                disturbed = True
                return " ~"
        return ""

    header = (
        "metric",
        *(LABELS[k] for k in registries),
        *(("moorage/Distribution",) if both else ()),
    )
    unreferenced = sum(blob.size for blob in population.garbage)

    def row(
        title: str,
        cell: Cell,
        number: Number | None = None,
        only: str | None = None,
        other: str = "-",
    ) -> tuple[str, ...]:
        cells = [cell(results[k]) if only in (None, k) else other for k in registries]
        ratio: tuple[str, ...] = ()
        if both:
            ratio = ("-",)
            if number is not None and only is None:
                low = number(results["distribution"])
                ratio = (f"{number(results['moorage']) / low:.2f}x" if low else "-",)
        return (title, *cells, *ratio)

    deleted = len(population.deleted)
    setup = [
        row(
            f"push {len(population.images)} images, images/s ({args.concurrency} conn.)",
            lambda r: f"{r['push_images_s']:.0f}{mark(r, 'push_cpu_pct')}",
            lambda r: float(r["push_images_s"]),
        ),
        row(
            f"DELETE {deleted} manifests by digest, s",
            lambda r: f"{r['delete_seconds']:.1f}",
            lambda r: float(r["delete_seconds"]),
        ),
    ]

    def latency(phase: str, kind: str) -> Cell:
        return lambda r: (
            f"{r[phase][f'{kind}_p50_ms']:.1f} / {r[phase][f'{kind}_p99_ms']:.1f}{mark(r, phase)}"
        )

    def p99(phase: str, kind: str) -> Number:
        return lambda r: float(r[phase][f"{kind}_p99_ms"])

    load = [
        row(
            "push an image, p50 / p99 ms, no collection",
            latency("without", "push"),
            p99("without", "push"),
        ),
        row(
            "pull an image, p50 / p99 ms, no collection",
            latency("without", "pull"),
            p99("without", "pull"),
        ),
        row(
            "images pushed / pulled (failed), no collection",
            lambda r: (
                f"{r['without']['pushes']} ({r['without']['push_failures']}) / "
                f"{r['without']['pulls']} ({r['without']['pull_failures']})"
            ),
        ),
    ]

    def collection_time(r: dict[str, Any]) -> str:
        if "runs" in r:
            first, second = (run["seconds"] for run in r["runs"])
            return f"{first:.1f} + {second:.1f} = {first + second:.1f}{mark(r, 'during')}"
        return f"{r['collection_seconds']:.1f}{mark(r, 'collection_cpu_pct')}"

    def collector_cpu(r: dict[str, Any]) -> float:
        if "runs" in r:
            return float(sum(run["cpu_seconds"] for run in r["runs"]))
        return float(r["collection_cpu_seconds"])

    def reclaimed(r: dict[str, Any]) -> str:
        freed = r["disk"]["removed_garbage_bytes"]
        return f"{mib(freed)} ({100 * freed / unreferenced:.1f}%)"

    collection = [
        row("collection, s", collection_time, lambda r: float(r["collection_seconds"])),
        row(
            "  of which in the collector (its own report), s",
            lambda r: " + ".join(f"{run['reported_seconds']:.1f}" for run in r["runs"]),
            only="moorage",
        ),
        row(
            "  wait between the two runs (gc.grace + 1 s), s",
            lambda r: f"{r['wait_seconds']:.1f}",
            only="moorage",
        ),
        row("collector CPU, s", lambda r: f"{collector_cpu(r):.1f}", collector_cpu),
        row(
            "registry down (stop, collect, start), s",
            lambda r: f"{r.get('down_seconds', 0.0):.1f}",
        ),
        row(
            "blobs deleted from the storage directory",
            lambda r: f"{r['disk']['removed_blobs']}",
        ),
        row(
            f"  of them garbage layers/configs (of {len(population.garbage)})",
            lambda r: f"{r['disk']['removed_garbage_blobs']}",
        ),
        row(
            f"  of them manifests (of {deleted})",
            lambda r: f"{r['disk']['removed_manifest_blobs']}",
            only="distribution",
            other="- (in SQLite)",
        ),
        row(f"unreferenced MiB reclaimed (of {mib(unreferenced)})", reclaimed),
        row(
            "garbage blobs left: on disk / not 404 to HEAD",
            lambda r: (
                f"{r['disk']['garbage_left']} / "
                f"{r['checks']['garbage_blobs'] - r['checks']['garbage_head_404']}"
            ),
        ),
        row(
            "kept images pulled whole afterwards",
            lambda r: (
                f"{r['checks']['kept_images'] - r['checks']['kept_failed']} of "
                f"{r['checks']['kept_images']}"
            ),
        ),
    ]

    def while_gc(kind: str) -> Cell:
        def cell(r: dict[str, Any]) -> str:
            w = r["during"]["while"]
            count = w["pushes" if kind == "push" else "pulls"]
            return f"{w[f'{kind}_p50_ms']:.1f} / {w[f'{kind}_p99_ms']:.1f} ({count})"

        return cell

    def worse(key: str) -> Cell:
        def cell(r: dict[str, Any]) -> str:
            during = r["during"]["while"] if key == "while" else r["during"]
            base = r["without"]["push_p99_ms"]
            return f"{during['push_p99_ms'] / base:.2f}x" if base else "-"

        return cell

    during = [
        row(
            "push an image, p50 / p99 ms, during collection",
            latency("during", "push"),
            only="moorage",
            other="none: stopped",
        ),
        row(
            "  while a moorage gc process ran (images)",
            while_gc("push"),
            only="moorage",
            other="none: stopped",
        ),
        row("  push p99 during / without collection", worse("during"), only="moorage"),
        row("  push p99 while gc ran / without collection", worse("while"), only="moorage"),
        row(
            "pull an image, p50 / p99 ms, during collection",
            latency("during", "pull"),
            only="moorage",
            other="none: stopped",
        ),
        row(
            "  while a moorage gc process ran (images)",
            while_gc("pull"),
            only="moorage",
            other="none: stopped",
        ),
        row(
            "images pushed / pulled (failed), during collection",
            lambda r: (
                f"{r['during']['pushes']} ({r['during']['push_failures']}) / "
                f"{r['during']['pulls']} ({r['during']['pull_failures']})"
            ),
            only="moorage",
            other="none: stopped",
        ),
    ]
    cpu = [
        row(
            "CPU % srv/client/other/irq/iowait, no collection",
            lambda r: cpu_split(r["without"]["cpu_pct"]),
        ),
        row(
            "CPU % srv/client/other/irq/iowait, during collection",
            lambda r: cpu_split(r["during"]["cpu_pct"]),
            only="moorage",
        ),
    ]

    reported: list[tuple[str, ...]] = []

    def counts(run: dict[str, Any], keys: tuple[str, ...]) -> Cell:
        def cell(_: dict[str, Any]) -> str:
            return " / ".join(
                str(run[key]["count"] if isinstance(run[key], dict) else run[key]) for key in keys
            )

        return cell

    if "moorage" in registries:
        for index, run in enumerate(results["moorage"]["runs"], 1):
            reported.append(
                row(
                    f"moorage gc run {index}: manifests / links / bytes freed",
                    counts(run, ("manifests_deleted", "links_deleted", "bytes_freed")),
                    only="moorage",
                )
            )
            reported.append(
                row(
                    f"  run {index}: blobs retired / bytes deleted / waiting",
                    counts(run, ("retired", "deleted", "waiting")),
                    only="moorage",
                )
            )
    if "distribution" in registries:
        reported.append(
            row(
                "garbage-collect: blobs marked / eligible / manifests",
                lambda r: f"{r['marked']} / {r['eligible_blobs']} / {r['eligible_manifests']}",
                only="distribution",
            )
        )

    out = [*aligned(header, setup, load, collection, during, cpu, reported), ""]
    out.append(
        f"{len(population.images)} images of a config + {args.layers} layers of "
        f"{args.layer_kib} KiB random bytes in {REPOSITORIES} repositories; {deleted} manifests "
        f"deleted by digest leave {len(population.garbage)} blobs ({mib(unreferenced)} MiB) "
        "unreferenced. "
        f"Load: {args.pushers} clients pushing new images at {args.push_rate:g}/s in all, "
        f"{args.pullers} pulling kept images at {args.pull_rate:g}/s (each image whole, every "
        f"digest checked), {args.duration:g} s without collection; on moorage the same clients "
        'run through both collections and the wait between them ("while a moorage gc process '
        'ran": the images under way at some point while one of the two ran). moorage: '
        f"`moorage serve` ({args.workers} workers, filesystem + SQLite), collected online by "
        f"`moorage gc` twice, {args.grace:g} s (gc.grace) apart: the first "
        "unlinks, the second deletes the bytes. Distribution 2.8: stopped, `docker-registry "
        "garbage-collect --delete-untagged`, started again; no pull or push is possible "
        "meanwhile. Times are wall seconds of the collector processes; ratios moorage/"
        "Distribution (lower is better for times and latencies). CPU: % of one core (200% = both) "
        "while the load ran: the server's processes, the client (this process and, during "
        "collection, the `moorage gc` processes it ran), other processes, interrupts, iowait."
    )
    if disturbed:
        out.append(
            f"~ other processes used more than {DISTURBED_PCT}% of a core meanwhile: the "
            "machine was shared, the number is disturbed."
        )
    return "\n".join(out)


def targets(results: dict[str, Any], population: Population) -> list[str]:
    """moorage's targets, met or not; none without a moorage run."""
    if "moorage" not in results:
        return []
    r = results["moorage"]
    unreferenced = sum(blob.size for blob in population.garbage)
    share = r["disk"]["removed_garbage_bytes"] / unreferenced
    reported = sum(run["garbage_deleted"]["bytes"] for run in r["runs"]) / unreferenced
    failed = r["during"]["pull_failures"]
    whole = r["checks"]["kept_images"] - r["checks"]["kept_failed"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    return [
        f"moorage reclaimed {100 * share:.1f}% of the unreferenced bytes on disk "
        f"({100 * reported:.1f}% by its own reports), target >= {100 * RECLAIM_TARGET:.0f}%: "
        f"{verdict(share >= RECLAIM_TARGET)}",
        f"moorage: {failed} failed pulls of kept images during collection, target 0: "
        f"{verdict(failed == 0)}",
        f"moorage: {whole} of {r['checks']['kept_images']} kept images pulled whole "
        f"afterwards: {verdict(whole == r['checks']['kept_images'])}",
    ]
