"""``moorage tags``: the history of a tag, where it pointed at a time, restoring it, and the
tags that ever pointed at a digest."""

from __future__ import annotations

import argparse
import json
from typing import Any

from moorage.commands.client import Client
from moorage.commands.render import short, table
from moorage.names import split_tagged


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    tags = commands.add_parser("tags", help="tag history and restore")
    actions = tags.add_subparsers(dest="action", required=True)
    history = actions.add_parser("history", parents=[common], help="every change to a tag")
    history.add_argument("reference", help="REPOSITORY:TAG")
    history.add_argument("-n", "--limit", type=int, default=50, help="newest N events")
    history.set_defaults(run=_history)
    at = actions.add_parser("at", parents=[common], help="the digest a tag pointed at, at a time")
    at.add_argument("reference", help="REPOSITORY:TAG")
    at.add_argument("time", help="ISO 8601, e.g. 2026-05-12T10:00Z, or Unix seconds")
    at.set_defaults(run=_at)
    restore = actions.add_parser("restore", parents=[common], help="point a tag at a digest again")
    restore.add_argument("reference", help="REPOSITORY:TAG")
    restore.add_argument("digest", help="a manifest digest of the repository")
    restore.set_defaults(run=_restore)
    digest = actions.add_parser(
        "digest", parents=[common], help="every tag that ever pointed at a digest"
    )
    digest.add_argument("digest")
    digest.set_defaults(run=_digest)


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _history(client: Client, args: argparse.Namespace) -> None:
    name, tag = split_tagged(args.reference)
    data = client.call(
        "GET", f"/v2/{name}/_moorage/tags/history", {"tag": tag, "n": str(args.limit)}
    )
    rows = [
        (
            e["time"],
            e["action"],
            short(e["old_digest"]),
            short(e["new_digest"]),
            e["user"] or "-",
            e["address"],
            e["request_id"],
            e["rule"] if e["action"] == "refused" else "",
        )
        for e in data["events"]
    ]
    headers = ("TIME", "ACTION", "FROM", "TO", "USER", "CLIENT", "REQUEST", "RULE")
    text = table(headers, rows) if rows else f"{args.reference}: no history"
    _print(args, data, text)


def _at(client: Client, args: argparse.Namespace) -> None:
    name, tag = split_tagged(args.reference)
    data = client.call("GET", f"/v2/{name}/_moorage/tags/at", {"tag": tag, "time": args.time})
    event = data["event"]
    if event is None:
        text = f"{args.reference} did not exist at {data['time']}"
    elif data["digest"] is None:
        text = f"{args.reference} was deleted at {data['time']} (since {event['time']})"
    else:
        text = f"{data['digest']}  ({event['action']} {event['time']})"
    _print(args, data, text)


def _restore(client: Client, args: argparse.Namespace) -> None:
    name, tag = split_tagged(args.reference)
    data = client.call(
        "POST", f"/v2/{name}/_moorage/tags/restore", {"tag": tag, "digest": args.digest}
    )
    previous = data["previous_digest"] or "nothing"
    _print(args, data, f"{args.reference} -> {data['digest']} (was {previous})")


def _digest(client: Client, args: argparse.Namespace) -> None:
    data = client.call("GET", "/v2/_moorage/tags/digest", {"digest": args.digest})
    rows = [
        (f"{t['repository']}:{t['tag']}", t["since"], t["until"] or "now") for t in data["tags"]
    ]
    text = (
        table(("TAG", "SINCE", "UNTIL"), rows) if rows else f"no tag ever pointed at {args.digest}"
    )
    _print(args, data, text)
