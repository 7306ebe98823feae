"""``moorage usage``: what each repository stores and how much it is used (chargeback), from
a running registry's ``GET /v2/_moorage/usage`` (administrators).

Stored bytes: its manifests, the blobs only it holds (OWN) and the blobs it shares with
other repositories (SHARED, counted in full in each of them). Pulls are manifest GETs served,
pushes manifest PUTs stored; each worker writes its counts every 10 seconds.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from moorage.commands.client import Client
from moorage.commands.render import human_size, table

HEADERS = (
    "REPOSITORY",
    "MANIFESTS",
    "TAGS",
    "BLOBS",
    "MANIFEST BYTES",
    "OWN",
    "SHARED",
    "PULLS",
    "LAST PULL",
    "PUSHES",
    "LAST PUSH",
)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    usage = commands.add_parser(
        "usage",
        parents=[common],
        help="stored bytes, pulls and pushes per repository (chargeback; admins)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    usage.add_argument("repository", nargs="?", help="only this repository (default: all)")
    usage.set_defaults(run=_usage)


def _usage(client: Client, args: argparse.Namespace) -> None:
    params = {} if args.repository is None else {"repository": args.repository}
    data = client.call("GET", "/v2/_moorage/usage", params)
    if args.json:
        print(json.dumps(data, indent=2))
        return
    rows = [
        (
            r["name"],
            r["manifests"],
            r["tags"],
            r["blobs"],
            human_size(r["manifest_bytes"]),
            human_size(r["own_bytes"]),
            human_size(r["shared_bytes"]),
            r["pulls"],
            r["last_pull"],
            r["pushes"],
            r["last_push"],
        )
        for r in data["repositories"]
    ]
    print(table(HEADERS, rows) if rows else "no repositories")
