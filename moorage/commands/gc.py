"""``moorage gc``: garbage collection, once, online (registries keep serving meanwhile).

It opens the storage and the metadata store the configuration names, as ``serve`` does, so
it runs beside the registry on the same data, or against the bucket and database replicas
share. ``--dry-run`` lists what would go and why everything else is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from moorage.errors import RegistryError, Unavailable

if TYPE_CHECKING:
    from moorage.config import Settings
    from moorage.registry.collector import CollectionReport


def add_parser(commands: Any, serve_options: Any) -> None:
    gc = commands.add_parser(
        "gc",
        help="delete what nothing uses (online); --dry-run shows what and why",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_options(gc)
    gc.add_argument("--dry-run", action="store_true", help="change nothing; list what would go")
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.add_argument(
        "--details",
        action="store_true",
        default=None,
        help="list every item and why it is kept (the default with --dry-run or --json)",
    )
    gc.add_argument("--summary", dest="details", action="store_false", help="totals only")
    gc.add_argument("--quiet", action="store_true", help="no progress on standard error")
    gc.set_defaults(run_configured=_gc)


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here: every other command of the CLI starts faster without the server.
    from moorage.registry.collection_report import as_document, as_text
    from moorage.server import build_registry

    if settings.storage.driver == "memory":
        print("moorage: the memory storage driver keeps nothing to collect", file=sys.stderr)
        return 2

    def progress(step: str, done: int, total: int) -> None:
        """On a terminal, a line that counts; elsewhere, a line per step."""
        if args.quiet or not (sys.stderr.isatty() or done == total):
            return
        end = "\n" if done == total else ""
        print(f"\r{step}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    async def run() -> CollectionReport:
        registry = build_registry(settings)
        try:
            await registry.meta.connect()
            collector = registry.collector(progress=progress)
            return await collector.run(dry_run=args.dry_run)
        finally:
            await registry.close()

    try:
        report = asyncio.run(run())
    except (Unavailable, OSError, RegistryError) as exc:
        print(f"moorage: garbage collection failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        details = True if args.details is None else args.details
        print(json.dumps(as_document(report, details=details), indent=2))
    else:
        details = args.dry_run if args.details is None else args.details
        print(as_text(report, details=details))
    return 0
