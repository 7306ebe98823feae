"""The MutatingWebhookConfiguration and ValidatingWebhookConfiguration for a cluster.

Defaults chosen for safety (``moorage webhook manifests``):

- ``admissionReviewVersions: [v1]``. ``sideEffects: None``: pins are recorded only for
  requests that are not dry runs, so server-side dry-run works.
- ``reinvocationPolicy: IfNeeded``: when another webhook adds a container after us, we are
  called again and pin it; our own output needs no further patch.
- ``timeoutSeconds`` set explicitly (10); the webhook's resolution deadline stays well under.
- ``kube-system`` and the webhook's own namespace are excluded, so a fail-closed webhook can
  never block the pods that would repair it.
- Rules cover Pods (and ``pods/ephemeralcontainers``) and every workload template.

Where the API server reaches the webhooks: a Service in the cluster (``clientConfig.service``,
the default), or, for webhooks running outside it, a URL (``clientConfig.url``: the base URL
with ``/mutate`` and ``/validate`` appended). The API server only calls ``https`` URLs, and
refuses one with user info, a query or a fragment; ``webhook_url`` checks a URL the same way.
The namespace still names where the webhooks' ServiceAccount lives, and is still excluded.

``rbac`` gives the webhooks' ServiceAccount what reading pull secrets takes (``get`` on
``secrets`` and ``serviceaccounts``) and what the cluster inventory takes (``list`` on every
resource of ``inventory.INVENTORY_RESOURCES``, in all namespaces).
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from moorage.admission.inventory import INVENTORY_RESOURCES

FailurePolicy = Literal["Fail", "Ignore"]

RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["batch"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["jobs", "cronjobs"],
        "scope": "Namespaced",
    },
]


DEFAULT_SERVICE = "moorage"
DEFAULT_PORT = 8443


def webhook_url(text: str) -> str:
    """The base URL of webhooks the API server calls directly, as ``clientConfig.url`` takes
    it: ``https://HOST[:PORT][/PATH]``, without a trailing ``/``. Raises ``ValueError`` for
    what the API server would refuse (another scheme, no host, user info, a query, a
    fragment)."""
    problem = f"the webhook URL {text!r}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{problem} cannot be read: {exc}") from None
    if parts.scheme != "https":
        raise ValueError(
            f"{problem} must start with https:// (the API server calls webhooks over HTTPS only)"
        )
    if not parts.hostname:
        raise ValueError(f"{problem} names no host: write https://HOST:PORT")
    if "@" in parts.netloc:
        raise ValueError(f"{problem} must not carry a user or password")
    if "?" in text or "#" in text:
        raise ValueError(
            f"{problem} must have no query (?...) or fragment (#...): the API server refuses them"
        )
    return text.rstrip("/")


@dataclass(frozen=True)
class _Endpoint:
    """Where the API server sends reviews: a Service, or a URL when ``url`` is set."""

    ca_bundle: str
    namespace: str
    service: str = DEFAULT_SERVICE
    port: int = DEFAULT_PORT
    url: str | None = None

    def client_config(self, path: str) -> dict[str, Any]:
        if self.url is not None:
            return {"url": self.url + path, "caBundle": self.ca_bundle}
        service = {"name": self.service, "namespace": self.namespace, "path": path}
        return {"service": {**service, "port": self.port}, "caBundle": self.ca_bundle}


def _webhook(
    name: str,
    path: str,
    *,
    endpoint: _Endpoint,
    timeout: int,
    failure_policy: FailurePolicy,
) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": timeout,
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "clientConfig": endpoint.client_config(path),
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": sorted({"kube-system", endpoint.namespace}),
                }
            ]
        },
        "rules": RULES,
    }


def webhook_configurations(
    *,
    ca_pem: bytes,
    service: str | None = None,
    namespace: str = "moorage",
    port: int | None = None,
    url: str | None = None,
    timeout: int = 10,
    failure_policy: FailurePolicy = "Fail",
) -> list[dict[str, Any]]:
    """The two configurations. The API server reaches the webhooks through the Service
    ``service`` (default moorage) in ``namespace`` on ``port`` (default 8443), or, given
    ``url`` (instead of ``service`` and ``port``), at ``url`` + ``/mutate`` and
    ``/validate``. ``namespace`` is excluded from both webhooks either way."""
    if not 1 <= timeout <= 30:
        raise ValueError("timeoutSeconds must be between 1 and 30 (a Kubernetes limit)")
    ca_bundle = base64.b64encode(ca_pem).decode()
    if url is not None:
        if service is not None or port is not None:
            raise ValueError(
                "a webhook URL replaces the Service: give the URL, or the service and port"
            )
        endpoint = _Endpoint(ca_bundle, namespace, url=webhook_url(url))
    else:
        endpoint = _Endpoint(
            ca_bundle,
            namespace,
            service=DEFAULT_SERVICE if service is None else service,
            port=DEFAULT_PORT if port is None else port,
        )
    hook = functools.partial(
        _webhook, endpoint=endpoint, timeout=timeout, failure_policy=failure_policy
    )
    mutating = hook("pin.images.moorage.dev", "/mutate")
    mutating["reinvocationPolicy"] = "IfNeeded"
    validating = hook("verify.images.moorage.dev", "/validate")
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "moorage-pin-images"},
            "webhooks": [mutating],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "moorage-verify-images"},
            "webhooks": [validating],
        },
    ]


def _inventory_rules() -> list[dict[str, Any]]:
    """``list`` on what the cluster inventory reads, a rule per API group."""
    by_group: dict[str, list[str]] = {}
    for resource in INVENTORY_RESOURCES:
        by_group.setdefault(resource.group, []).append(resource.resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": ["list"]}
        for group, resources in sorted(by_group.items())
    ]


def rbac(*, service_account: str = "moorage", namespace: str = "moorage") -> list[dict[str, Any]]:
    """A ClusterRole and its binding: the webhooks read workloads' imagePullSecrets, and list
    the workloads of every namespace for the cluster inventory. (The role keeps its first
    name, ``<account>-read-pull-secrets``, so applying a newer version updates it.)"""
    name = f"{service_account}-read-pull-secrets"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]},
                *_inventory_rules(),
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
            ],
        },
    ]
