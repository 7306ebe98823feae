"""The ``moorage`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from moorage import __version__
from moorage.commands import policy, tags
from moorage.commands.client import ApiError, Client
from moorage.config import ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moorage", description=__doc__)
    parser.add_argument("--version", action="version", version=f"moorage {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the registry")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--data", type=Path, help="data directory (default ./data)")
    serve.add_argument("--workers", type=int, help="worker processes (default 2)")
    serve.add_argument("--storage", dest="storage_driver", choices=["filesystem", "memory"])
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain for HTTPS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for HTTPS")
    serve.add_argument("--htpasswd", dest="auth_htpasswd", type=Path, help="bcrypt htpasswd file")
    serve.add_argument(
        "--anonymous-pull",
        dest="auth_anonymous_pull",
        action="store_const",
        const=True,
        help="with --htpasswd, let anonymous clients pull",
    )
    serve.add_argument(
        "--access-log", dest="log_access", action="store_const", const=True, help="log requests"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", help="registry URL (default $MOORAGE_REGISTRY or http://127.0.0.1:5000)"
    )
    common.add_argument("--user", help="basic-auth user (default $MOORAGE_USER)")
    common.add_argument("--ca-file", help="CA certificate for HTTPS (default $MOORAGE_CA_FILE)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tags.add_parser(commands, common)
    policy.add_parser(commands, common)
    return parser


def _run_remote(args: argparse.Namespace) -> int:
    """Commands that talk to a running registry; the password comes from $MOORAGE_PASSWORD."""
    client = Client.from_env(args.registry, args.user, args.ca_file)
    try:
        args.run(client, args)
    except ApiError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        return _run_remote(args)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "serve":
        from moorage.server import serve

        try:
            return serve(settings)
        except OSError as exc:
            print(f"moorage: cannot serve: {exc}", file=sys.stderr)
            return 1
    return 2
