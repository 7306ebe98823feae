"""``moorage certs``, ``moorage webhook serve|manifests`` and ``moorage pins``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from moorage.admission.configuration import rbac, webhook_configurations
from moorage.certs import issue, service_names
from moorage.commands.client import Client
from moorage.commands.render import short, table


def add_parsers(commands: Any, common: argparse.ArgumentParser, serve_options: Any) -> None:
    certs = commands.add_parser(
        "certs", help="make a CA and a serving certificate for the webhooks (and the registry)"
    )
    certs.add_argument("--out", type=Path, help="directory (./certs; not with --secret)")
    certs.add_argument("--service", default="moorage", help="the Service name (moorage)")
    certs.add_argument("--namespace", default="moorage", help="its namespace (moorage)")
    certs.add_argument("--dns", action="append", default=[], help="another DNS name (repeat)")
    certs.add_argument("--ip", action="append", default=[], help="an IP address (repeat)")
    certs.add_argument("--days", type=int, default=365)
    certs.add_argument("--force", action="store_true", help="replace existing files")
    certs.add_argument(
        "--secret",
        metavar="NAME",
        help="keep them in this Secret of --namespace instead of files, through the Kubernetes "
        "API (the pod's ServiceAccount, or MOORAGE_ADMISSION_KUBERNETES_API with its token and "
        "CA files); a certificate for the same names, valid for 30 more days, is kept",
    )
    certs.add_argument(
        "--wait-for-secret",
        type=float,
        metavar="SECONDS",
        help="with --secret: issue nothing, wait up to SECONDS for the Secret another issuer "
        "(cert-manager) writes",
    )
    certs.add_argument(
        "--mutating-webhook",
        action="append",
        default=[],
        metavar="NAME",
        help="with --secret: put the Secret's CA into this MutatingWebhookConfiguration's "
        "caBundle, if it exists (repeat)",
    )
    certs.add_argument(
        "--validating-webhook",
        action="append",
        default=[],
        metavar="NAME",
        help="the same for a ValidatingWebhookConfiguration (repeat)",
    )
    certs.add_argument(
        "--failure-policy",
        choices=["Fail", "Ignore"],
        help="with --mutating-webhook or --validating-webhook: also set failurePolicy, once the "
        "caBundle is in",
    )
    certs.set_defaults(run_local=_certs)

    webhook = commands.add_parser("webhook", help="the admission webhooks")
    actions = webhook.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve only the webhooks, against the registry's data")
    serve_options(serve)
    serve.add_argument(
        "--webhook-listen",
        dest="webhook.listen",
        default="0.0.0.0:8443",
        help="HOST:PORT (default 0.0.0.0:8443)",
    )
    manifests = actions.add_parser(
        "manifests", help="print the Mutating/ValidatingWebhookConfiguration (JSON, for kubectl)"
    )
    manifests.add_argument("--ca-file", type=Path, default=Path("certs/ca.crt"))
    manifests.add_argument(
        "--service", help="the Service the API server calls the webhooks through (moorage)"
    )
    manifests.add_argument("--port", type=int, help="the Service's port (8443)")
    manifests.add_argument(
        "--url",
        help="https://HOST:PORT of webhooks running outside the cluster, called directly "
        "(/mutate and /validate are appended); instead of --service and --port",
    )
    manifests.add_argument(
        "--namespace",
        default="moorage",
        help="the webhooks' namespace: their ServiceAccount's, and left out of admission (moorage)",
    )
    manifests.add_argument(
        "--service-account", default="moorage", help="the webhooks' ServiceAccount (moorage)"
    )
    manifests.add_argument("--timeout", type=int, default=10, help="timeoutSeconds (10)")
    manifests.add_argument(
        "--failure-policy",
        choices=["Fail", "Ignore"],
        default="Fail",
        help="Fail (fail closed, the default) or Ignore (fail open)",
    )
    manifests.set_defaults(run_local=_manifests)

    pins = commands.add_parser(
        "pins", parents=[common], help="what images resolved to, where and when"
    )
    pins.add_argument(
        "image", nargs="?", help="the image as workloads write it, e.g. team/app:today"
    )
    pins.add_argument("-N", "--namespace", help="only this namespace")
    pins.add_argument("-n", "--limit", type=int, default=50)
    pins.set_defaults(run=_pins)


def _certs(args: argparse.Namespace) -> int:
    names = service_names(args.service, args.namespace) + args.dns
    if args.secret is not None:
        return _certs_in_secret(args, names)
    for option in ("wait_for_secret", "failure_policy"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} goes with --secret")
    if args.mutating_webhook or args.validating_webhook:
        raise ValueError("--mutating-webhook and --validating-webhook go with --secret")
    out = Path("certs") if args.out is None else args.out
    issued = issue(out, names, args.ip, days=args.days, overwrite=args.force)
    print(f"CA:          {issued.ca_cert} (key {issued.ca_key})")
    print(f"certificate: {issued.cert} (key {issued.key}) for {', '.join(names + args.ip)}")
    return 0


def _certs_in_secret(args: argparse.Namespace, names: list[str]) -> int:
    """``moorage certs --secret``: the Secret, then the webhook configurations' caBundle."""
    # Imported here: the Kubernetes client brings aiohttp, which other commands do without.
    from moorage.admission.kube import KubernetesError
    from moorage.admission.setup import cluster_config
    from moorage.commands import cert_secret
    from moorage.config import load_settings
    from moorage.documents import DocumentError

    if args.out is not None:
        raise ValueError("--secret keeps the certificate in a Secret: leave out --out")
    try:
        config = cluster_config(load_settings())
        if config is None:
            raise KubernetesError(
                "no Kubernetes API: run in a pod, or set MOORAGE_ADMISSION_KUBERNETES_API, "
                "MOORAGE_ADMISSION_KUBERNETES_TOKEN_FILE (and _CA_FILE)"
            )
        api = cert_secret.KubeApi(config)
        where = f"{args.namespace}/{args.secret}"
        if args.wait_for_secret is not None:
            ca_pem = cert_secret.wait_for_secret(
                api, args.namespace, args.secret, args.wait_for_secret
            )
            print(f"Secret {where}: written by its issuer")
        else:
            ensured = cert_secret.ensure_secret(
                api,
                args.namespace,
                args.secret,
                names,
                args.ip,
                days=args.days,
                force=args.force,
                labels={"app.kubernetes.io/created-by": "moorage-certs"},
            )
            ca_pem = ensured.ca_pem
            if ensured.issued:
                print(
                    f"Secret {where}: new CA and certificate ({ensured.reason}) for "
                    f"{', '.join(names + args.ip)}"
                )
            else:
                print(f"Secret {where}: kept (valid for {', '.join(names + args.ip)})")
        hooks: list[tuple[cert_secret.WebhookKind, str]] = [
            *(("mutating", name) for name in args.mutating_webhook),
            *(("validating", name) for name in args.validating_webhook),
        ]
        for kind, name in hooks:
            armed = cert_secret.arm(api, kind, name, ca_pem, args.failure_policy)
            policy = f", failurePolicy {args.failure_policy}" if args.failure_policy else ""
            state = f"caBundle set{policy}" if armed else "not there yet"
            print(f"{kind.capitalize()}WebhookConfiguration {name}: {state}")
    except (DocumentError, KubernetesError, cert_secret.KubernetesApiError) as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 1
    return 0


def _manifests(args: argparse.Namespace) -> int:
    if args.url is not None and (args.service is not None or args.port is not None):
        raise ValueError(
            "--url replaces --service and --port (the API server calls the URL directly): "
            "give --url, or --service and --port"
        )
    documents = webhook_configurations(
        ca_pem=args.ca_file.read_bytes(),
        service=args.service,
        namespace=args.namespace,
        port=args.port,
        url=args.url,
        timeout=args.timeout,
        failure_policy=args.failure_policy,
    ) + rbac(service_account=args.service_account, namespace=args.namespace)
    json.dump({"apiVersion": "v1", "kind": "List", "items": documents}, sys.stdout, indent=2)
    print()
    return 0


def _pins(client: Client, args: argparse.Namespace) -> None:
    params = {"n": str(args.limit)}
    if args.namespace:
        params["namespace"] = args.namespace
    if args.image:
        params["image"] = args.image
    data = client.call("GET", "/v2/_moorage/pins", params)
    rows = [
        (
            p["time"],
            p["namespace"],
            f"{p['kind']}/{p['name']}",
            p["container"],
            p["image"],
            short(p["digest"]),
            p["source"],
        )
        for p in data["pins"]
    ]
    headers = ("TIME", "NAMESPACE", "OBJECT", "CONTAINER", "IMAGE", "DIGEST", "VIA")
    text = table(headers, rows) if rows else "no pins recorded"
    print(json.dumps(data, indent=2) if args.json else text)
