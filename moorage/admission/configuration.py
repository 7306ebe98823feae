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

``rbac`` gives the webhooks' ServiceAccount what reading pull secrets takes: ``get`` on
``secrets`` and ``serviceaccounts``.
"""

from __future__ import annotations

import base64
import functools
from typing import Any, Literal

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


def _webhook(
    name: str,
    path: str,
    *,
    service: str,
    namespace: str,
    port: int,
    ca_pem: bytes,
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
        "clientConfig": {
            "service": {"name": service, "namespace": namespace, "path": path, "port": port},
            "caBundle": base64.b64encode(ca_pem).decode(),
        },
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": sorted({"kube-system", namespace}),
                }
            ]
        },
        "rules": RULES,
    }


def webhook_configurations(
    *,
    ca_pem: bytes,
    service: str = "moorage",
    namespace: str = "moorage",
    port: int = 8443,
    timeout: int = 10,
    failure_policy: FailurePolicy = "Fail",
) -> list[dict[str, Any]]:
    if not 1 <= timeout <= 30:
        raise ValueError("timeoutSeconds must be between 1 and 30 (a Kubernetes limit)")
    hook = functools.partial(
        _webhook,
        service=service,
        namespace=namespace,
        port=port,
        ca_pem=ca_pem,
        timeout=timeout,
        failure_policy=failure_policy,
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


def rbac(*, service_account: str = "moorage", namespace: str = "moorage") -> list[dict[str, Any]]:
    """A ClusterRole and its binding: the webhooks read workloads' imagePullSecrets."""
    name = f"{service_account}-read-pull-secrets"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]}
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
