"""The ``moorage`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from moorage import __version__
from moorage.commands import admission, gc, policy, tags, usage
from moorage.commands.client import ApiError, Client
from moorage.config import Settings, load_settings
from moorage.documents import DocumentError

#: The options that set a setting (their ``dest`` is the setting's key), as users spell them.
SETTING_OPTIONS = {
    "listen": "--listen",
    "data": "--data",
    "workers": "--workers",
    "storage.driver": "--storage",
    "metadata.backend": "--metadata",
    "metadata.dsn": "--dsn",
    "tls.cert": "--tls-cert",
    "tls.key": "--tls-key",
    "auth.htpasswd": "--htpasswd",
    "auth.anonymous_pull": "--anonymous-pull",
    "log.access": "--access-log",
    "webhook.listen": "--webhook-listen",
}


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as options."""
    return {k: v for k, v in vars(args).items() if k in SETTING_OPTIONS and v is not None}


def _option_sources() -> dict[str, str]:
    return {key: f"option {flag}" for key, flag in SETTING_OPTIONS.items()}


def _serve_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that run servers: they override the configuration."""
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    parser.add_argument("--data", type=Path, help="data directory (default ./data)")
    parser.add_argument("--workers", type=int, help="worker processes (default 2)")
    parser.add_argument("--storage", dest="storage.driver", choices=["filesystem", "s3", "memory"])
    parser.add_argument("--metadata", dest="metadata.backend", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--dsn", dest="metadata.dsn", help="PostgreSQL connection string (--metadata postgres)"
    )
    parser.add_argument(
        "--tls-cert", dest="tls.cert", type=Path, help="PEM certificate chain for HTTPS"
    )
    parser.add_argument("--tls-key", dest="tls.key", type=Path, help="PEM private key for HTTPS")
    parser.add_argument("--htpasswd", dest="auth.htpasswd", type=Path, help="bcrypt htpasswd file")
    parser.add_argument(
        "--anonymous-pull",
        dest="auth.anonymous_pull",
        action="store_const",
        const=True,
        help="with --htpasswd, let anonymous clients pull",
    )
    parser.add_argument(
        "--access-log", dest="log.access", action="store_const", const=True, help="log requests"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moorage", description=__doc__)
    parser.add_argument("--version", action="version", version=f"moorage {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the registry (and, optionally, the webhooks)")
    _serve_options(serve)
    serve.add_argument(
        "--webhook-listen",
        dest="webhook.listen",
        help="also serve the admission webhooks (HTTPS) on HOST:PORT",
    )
    serve.set_defaults(serve_mode="registry")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", help="registry URL (default $MOORAGE_REGISTRY or http://127.0.0.1:5000)"
    )
    common.add_argument("--user", help="basic-auth user (default $MOORAGE_USER)")
    common.add_argument("--ca-file", help="CA certificate for HTTPS (default $MOORAGE_CA_FILE)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    migrate = commands.add_parser(
        "migrate", help="bring the PostgreSQL metadata schema up to date (before upgrading)"
    )
    migrate.add_argument("--config", type=Path, help="TOML configuration file")
    migrate.add_argument("--dsn", dest="metadata.dsn", help="PostgreSQL connection string")

    tags.add_parser(commands, common)
    policy.add_parser(commands, common)
    admission.add_parsers(commands, common, _serve_options)
    gc.add_parser(commands, _serve_options)
    usage.add_parser(commands, common)
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


def _configured(args: argparse.Namespace) -> Settings | None:
    """The settings the options, the environment and the config file give, with logging set
    up as they say; None (after saying why) if they are wrong."""
    try:
        settings = load_settings(args.config, None, _overrides(args), _option_sources())
    except DocumentError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return None
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    return settings


def _serve(args: argparse.Namespace, registry_api: bool) -> int:
    settings = _configured(args)
    if settings is None:
        return 2
    from moorage.server import StartupError, serve

    try:
        return serve(settings, registry_api=registry_api)
    except (OSError, StartupError, DocumentError) as exc:
        print(f"moorage: cannot serve: {exc}", file=sys.stderr)
        return 1


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from moorage.backends import migrate
    from moorage.meta.errors import MetadataError

    try:
        settings = load_settings(
            args.config,
            None,
            {"metadata.backend": "postgres", **_overrides(args)},
            {**_option_sources(), "metadata.backend": "moorage migrate"},
        )
        before, after = asyncio.run(migrate(settings))
    except (DocumentError, MetadataError, OSError) as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"metadata schema is up to date (version {after})")
    else:
        print(f"metadata schema migrated from version {before} to {after}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "serve":
        return _serve(args, registry_api=True)
    if args.command == "webhook" and args.action == "serve":
        return _serve(args, registry_api=False)
    if hasattr(args, "run_configured"):  # commands that open the registry's data themselves
        settings = _configured(args)
        return 2 if settings is None else int(args.run_configured(settings, args))
    if hasattr(args, "run_local"):
        try:
            return int(args.run_local(args))
        except (ValueError, OSError) as exc:
            print(f"moorage: {exc}", file=sys.stderr)
            return 2
    return _run_remote(args)
