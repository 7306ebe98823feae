"""``helm lint`` of every profile, and the values the chart refuses: by its schema
(``values.schema.json``: unknown keys, wrong types, values outside their set) and by its rules
across values (a message saying what to change)."""

from __future__ import annotations

import json

import pytest

from tests.charts.chart import CHART, PROFILES, Helm


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_lints_cleanly(helm: Helm, profile: str) -> None:
    for strict in ((), ("--strict",)):
        result = helm("lint", CHART, *strict, "--values", PROFILES[profile])
        output = result.stdout + result.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in output, output
        assert "[WARNING]" not in output and "[ERROR]" not in output, output


def test_the_schema_is_draft_07_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def closed(node: dict[str, object], where: str) -> None:
        properties = node.get("properties")
        if isinstance(properties, dict):
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for name, child in properties.items():
                if isinstance(child, dict):
                    closed(child, f"{where}.{name}")

    closed(schema, "values")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # A misspelt key, at the top and deep down.
        (["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
        (
            ["--set", "registry.persistance.size=1Gi"],
            "additional properties 'persistance' not allowed",
        ),
        (["--set", "storage.s3.acessKeyKey=k"], "additional properties 'acessKeyKey' not allowed"),
        # Wrong types.
        (["--set", "registry.replicas=three"], "at '/registry/replicas': got string, want integer"),
        (["--set-json", 'webhooks.registryHosts="a:5000"'], "got string, want array"),
        (["--set", "registry.workers=0"], "at '/registry/workers': minimum: got 0, want 1"),
        # Values outside their set.
        (["--set", "webhooks.failurePolicy=fail"], "value must be one of 'Fail', 'Ignore'"),
        (["--set", "storage.driver=gcs"], "value must be one of 'filesystem', 's3'"),
        (["--set", "metadata.backend=mysql"], "value must be one of 'sqlite', 'postgres'"),
        (["--set", "webhooks.timeoutSeconds=31"], "maximum: got 31, want 30"),
        (["--set", "image.digest=sha256:abc"], "at '/image/digest'"),
    ],
)
def test_the_schema_refuses_typos_and_wrong_types(
    helm: Helm, values: list[str], message: str
) -> None:
    for command in ("lint", "template"):
        result = helm(command, CHART, *values, check=False)
        assert result.returncode != 0, f"helm {command} accepted {values}"
        assert message in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["--set", "registry.replicas=2"],
            "registry.replicas > 1 needs storage.driver s3 and metadata.backend postgres",
        ),
        (
            ["--set", "registry.enabled=false", "--set", "webhooks.registryHosts[0]=r:5000"],
            "webhook-only (registry.enabled false) needs metadata.backend postgres",
        ),
        (
            ["--values", PROFILES["webhook-only"], "--set", "webhooks.registryHosts=null"],
            "webhook-only (registry.enabled false) needs webhooks.registryHosts",
        ),
        (
            ["--set", "registry.enabled=false", "--set", "webhooks.enabled=false"],
            "nothing to install",
        ),
        (
            ["--set", "storage.driver=s3", "--set", "storage.s3.bucket=b"],
            "storage.driver s3 needs storage.s3.endpoint, storage.s3.bucket and "
            "storage.s3.existingSecret",
        ),
        (
            ["--set", "metadata.backend=postgres"],
            "metadata.backend postgres needs metadata.postgres.existingSecret",
        ),
        (
            ["--set", "nodeAccess.containerdHosts.enabled=true", "--set-json",
             'registry.service={"type":"ClusterIP"}'],
            "nodeAccess.containerdHosts points nodes at 127.0.0.1:<nodePort>",
        ),
        (
            ["--set", "webhooks.certificates.issuer=cert-manager"],
            "the cluster does not serve cert-manager.io/v1",
        ),
    ],
)  # fmt: skip
def test_rules_across_values_say_what_to_change(
    helm: Helm, values: list[str], message: str
) -> None:
    result = helm("template", "moorage", CHART, *map(str, values), check=False)
    assert result.returncode != 0, f"helm template accepted {values}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "rendered"),
    [
        (["--set", "metrics.serviceMonitor.enabled=true"], False),
        (["--set", "metrics.serviceMonitor.enabled=true", "--api-versions",
          "monitoring.coreos.com/v1"], True),
        (["--set", "metrics.serviceMonitor.enabled=true",
          "--set", "metrics.serviceMonitor.force=true"], True),
        (["--api-versions", "monitoring.coreos.com/v1"], False),
    ],
)  # fmt: skip
def test_a_service_monitor_when_enabled_and_served_or_forced(
    helm: Helm, args: list[str], rendered: bool
) -> None:
    output = helm("template", "moorage", CHART, *args).stdout
    assert ("\nkind: ServiceMonitor\n" in output) is rendered


@pytest.mark.parametrize(
    ("args", "cert_manager"),
    [
        ([], False),
        (["--api-versions", "cert-manager.io/v1"], True),
        (["--api-versions", "cert-manager.io/v1", "--set",
          "webhooks.certificates.issuer=moorage"], False),
    ],
)  # fmt: skip
def test_certificates_from_cert_manager_when_it_is_there(
    helm: Helm, args: list[str], cert_manager: bool
) -> None:
    output = helm("template", "moorage", CHART, *args).stdout
    assert ("\nkind: Certificate\n" in output) is cert_manager
    assert ("cert-manager.io/inject-ca-from:" in output) is cert_manager
    assert ("- --wait-for-secret\n" in output) is cert_manager
