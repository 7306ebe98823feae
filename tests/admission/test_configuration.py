"""moorage.admission.configuration: the webhook configurations, their safe defaults, and how
the API server reaches the webhooks (a Service, or a URL)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from moorage.admission.configuration import rbac, webhook_configurations, webhook_url


def test_safe_defaults() -> None:
    mutating, validating = webhook_configurations(ca_pem=b"PEM", namespace="infra")
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    assert validating["kind"] == "ValidatingWebhookConfiguration"
    pin, verify = mutating["webhooks"][0], validating["webhooks"][0]
    for hook in (pin, verify):
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 10
        assert hook["failurePolicy"] == "Fail"
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"PEM"
        expression = hook["namespaceSelector"]["matchExpressions"][0]
        assert expression == {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["infra", "kube-system"],
        }
        resources = {r for rule in hook["rules"] for r in rule["resources"]}
        assert {
            "pods",
            "pods/ephemeralcontainers",
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "replicationcontrollers",
            "podtemplates",
        } <= resources
    assert pin["reinvocationPolicy"] == "IfNeeded"
    assert "reinvocationPolicy" not in verify
    assert pin["clientConfig"]["service"] == {
        "name": "moorage",
        "namespace": "infra",
        "path": "/mutate",
        "port": 8443,
    }
    assert verify["clientConfig"]["service"]["path"] == "/validate"


def test_choices_and_limits() -> None:
    (mutating, _) = webhook_configurations(ca_pem=b"x", timeout=5, failure_policy="Ignore")
    assert mutating["webhooks"][0]["timeoutSeconds"] == 5
    assert mutating["webhooks"][0]["failurePolicy"] == "Ignore"
    with pytest.raises(ValueError):
        webhook_configurations(ca_pem=b"x", timeout=31)


def test_rbac_grants_reading_pull_secrets_and_listing_workloads_only() -> None:
    role, binding = rbac(service_account="hook", namespace="infra")
    assert role["kind"] == "ClusterRole"
    assert role["metadata"]["name"] == "hook-read-pull-secrets"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]},
        # The cluster inventory, in all namespaces.
        {
            "apiGroups": [""],
            "resources": ["pods", "podtemplates", "replicationcontrollers"],
            "verbs": ["list"],
        },
        {
            "apiGroups": ["apps"],
            "resources": [
                "controllerrevisions",
                "daemonsets",
                "deployments",
                "replicasets",
                "statefulsets",
            ],
            "verbs": ["list"],
        },
        {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": ["list"]},
    ]
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hook", "namespace": "infra"}]


# -- webhooks outside the cluster: clientConfig.url ---------------------------------------------


def test_a_url_replaces_the_service() -> None:
    mutating, validating = webhook_configurations(
        ca_pem=b"PEM", namespace="infra", url="https://127.0.0.1:8443"
    )
    pin, verify = mutating["webhooks"][0], validating["webhooks"][0]
    assert pin["clientConfig"] == {
        "url": "https://127.0.0.1:8443/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert verify["clientConfig"]["url"] == "https://127.0.0.1:8443/validate"
    # Everything else is as with a Service, the namespace still left out.
    by_service = webhook_configurations(ca_pem=b"PEM", namespace="infra")
    for made, usual in zip((pin, verify), (c["webhooks"][0] for c in by_service), strict=True):
        assert {k: v for k, v in made.items() if k != "clientConfig"} == {
            k: v for k, v in usual.items() if k != "clientConfig"
        }
        assert made["namespaceSelector"]["matchExpressions"][0]["values"] == [
            "infra",
            "kube-system",
        ]


@pytest.mark.parametrize(
    ("url", "mutate"),
    [
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443/mutate"),
        ("https://127.0.0.1:8443/", "https://127.0.0.1:8443/mutate"),
        ("https://hooks.example.com", "https://hooks.example.com/mutate"),
        (
            "https://hooks.example.com:9443/moorage/",
            "https://hooks.example.com:9443/moorage/mutate",
        ),
        ("https://[::1]:8443", "https://[::1]:8443/mutate"),
    ],
)
def test_url_paths_are_appended(url: str, mutate: str) -> None:
    (mutating, _) = webhook_configurations(ca_pem=b"x", url=url)
    assert mutating["webhooks"][0]["clientConfig"]["url"] == mutate


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:8443", "must start with https://"),
        ("127.0.0.1:8443", "must start with https://"),
        ("https://", "names no host"),
        ("https://:8443/x", "names no host"),
        ("https://127.0.0.1:8443/?debug=1", "must have no query (?...) or fragment (#...)"),
        ("https://127.0.0.1:8443?", "must have no query"),
        ("https://127.0.0.1:8443#top", "or fragment"),
        ("https://admin:secret@127.0.0.1:8443", "must not carry a user or password"),
        ("https://token@127.0.0.1:8443", "must not carry a user or password"),
        ("https://127.0.0.1:https", "cannot be read"),
    ],
)
def test_urls_the_api_server_would_refuse(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        webhook_configurations(ca_pem=b"x", url=url)
    assert str(caught.value).startswith(f"the webhook URL {url!r} ")
    assert problem in str(caught.value)
    with pytest.raises(ValueError):
        webhook_url(url)


@pytest.mark.parametrize(
    "service", [{"service": "hooks"}, {"port": 443}, {"service": "m", "port": 1}]
)
def test_a_url_and_a_service_are_exclusive(service: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="a webhook URL replaces the Service"):
        webhook_configurations(ca_pem=b"x", url="https://127.0.0.1:8443", **service)


def test_a_service_and_port_of_ones_own() -> None:
    (mutating, _) = webhook_configurations(ca_pem=b"x", service="hooks", port=443)
    assert mutating["webhooks"][0]["clientConfig"]["service"] == {
        "name": "hooks",
        "namespace": "moorage",
        "path": "/mutate",
        "port": 443,
    }
