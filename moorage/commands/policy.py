"""``moorage policy``: list, check and replace the tag policy, and show its changes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moorage.commands.client import Client
from moorage.commands.render import table
from moorage.documents import parse_json, parse_toml, read_text
from moorage.names import split_tagged


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    policy = commands.add_parser("policy", help="immutable/mutable tag rules")
    actions = policy.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="the rules in force").set_defaults(run=_list)
    check = actions.add_parser(
        "check", parents=[common], help="is REPOSITORY:TAG immutable, and by which rule?"
    )
    check.add_argument("reference", help="REPOSITORY:TAG")
    check.set_defaults(run=_check)
    replace = actions.add_parser(
        "set", parents=[common], help="replace the rules with a TOML ([policy]) or JSON file"
    )
    replace.add_argument("file", type=Path)
    replace.set_defaults(run=_set)
    changes = actions.add_parser("changes", parents=[common], help="who changed the rules, when")
    changes.add_argument("-n", "--limit", type=int, default=20)
    changes.set_defaults(run=_changes)


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _rules_table(document: dict[str, Any]) -> str:
    rows = [
        (
            index,
            rule["name"],
            rule["mode"],
            ",".join(rule["repositories"]),
            ",".join(rule["tags"]),
            ",".join(rule.get("except_tags", [])) or "-",
        )
        for index, rule in enumerate(document["rules"], 1)
    ]
    body = table(("#", "NAME", "MODE", "REPOSITORIES", "TAGS", "EXCEPT"), rows) if rows else ""
    return (body + "\n" if body else "") + f"default: {document['default']} (when no rule matches)"


def _list(client: Client, args: argparse.Namespace) -> None:
    data = client.call("GET", "/v2/_moorage/policy/rules")
    text = f"version {data['version']}\n" + _rules_table(data)
    if "updated" in data:
        updated = data["updated"]
        who = updated["user"] or updated["address"]
        text += f"\nlast changed {updated['time']} by {who} ({updated['source']})"
    _print(args, data, text)


def _check(client: Client, args: argparse.Namespace) -> None:
    name, tag = split_tagged(args.reference)
    data = client.call("GET", "/v2/_moorage/policy/check", {"repository": name, "tag": tag})
    _print(args, data, f"{args.reference} is {data['mode']}: {data['reason']}")


def load_policy_file(path: Path) -> Any:
    """A policy document from JSON, or TOML with a [policy] table (as in the config file);
    ``DocumentError`` when the file cannot be read or parsed. The registry checks the rules."""
    source = f"policy file {path}"
    text = read_text(path, source)
    document = parse_json(text, source) if path.suffix == ".json" else parse_toml(text, source)
    if isinstance(document, dict) and "policy" in document:
        return document["policy"]
    return document


def _set(client: Client, args: argparse.Namespace) -> None:
    data = client.call("PUT", "/v2/_moorage/policy/rules", body=load_policy_file(args.file))
    _print(args, data, f"version {data['version']} in force\n" + _rules_table(data))


def _changes(client: Client, args: argparse.Namespace) -> None:
    data = client.call("GET", "/v2/_moorage/policy/changes", {"n": str(args.limit)})
    rows = [
        (c["time"], c["user"] or "-", c["address"], c["source"], len(c["new"]["rules"]))
        for c in data["changes"]
    ]
    _print(args, data, table(("TIME", "USER", "CLIENT", "SOURCE", "RULES"), rows))
