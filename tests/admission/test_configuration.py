"""moorage.admission.configuration: the webhook configurations and their safe defaults."""

from __future__ import annotations

import base64

import pytest

from moorage.admission.configuration import rbac, webhook_configurations


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


def test_rbac_grants_reading_pull_secrets_only() -> None:
    role, binding = rbac(service_account="hook", namespace="infra")
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hook", "namespace": "infra"}]
