"""``moorage certs --secret`` against a real kube-apiserver: the cases the chart's installs do
not meet (``test_install.py`` runs its hook Job): a certificate renewed for new names or
near its end, the CA bundle across a renewal, waiting for cert-manager's Secret, and the
mistakes it refuses."""

from __future__ import annotations

import base64
import datetime
import re
from pathlib import Path

import pytest
from cryptography import x509

from moorage.admission.kube import ClusterConfig
from moorage.certs import issue, service_names
from moorage.commands import cert_secret
from moorage.commands.cert_secret import KubeApi, KubernetesApiError
from tests.support.cli import moorage_cli
from tests.support.kube import ControlPlane, Json, Kube, api_path

NAMESPACE = "chart-certs"


@pytest.fixture
def api(plane: ControlPlane, kube: Kube) -> KubeApi:
    if kube.find(api_path("v1", "namespaces", name=NAMESPACE)) is None:
        kube.create_namespace(NAMESPACE, wait_for_service_account=False)
    return KubeApi(ClusterConfig.explicit(plane.server, plane.admin_token_file, plane.ca_file))


def names(service: str) -> list[str]:
    return service_names(service, NAMESPACE)


def secret_files(kube: Kube, name: str) -> dict[str, bytes]:
    secret = kube.get(api_path("v1", "secrets", NAMESPACE, name))
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def configuration(name: str) -> Json:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{hook}.images.moorage.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "clientConfig": {"service": {"name": "w", "namespace": NAMESPACE}},
            }
            for hook in ("one", "two")
        ],
    }


def test_a_certificate_is_kept_until_the_names_change(api: KubeApi, kube: Kube) -> None:
    first = cert_secret.ensure_secret(api, NAMESPACE, "kept", names("w"), [], days=365)
    assert (first.issued, first.reason) == (True, "there was none")
    again = cert_secret.ensure_secret(api, NAMESPACE, "kept", names("w"), [], days=365)
    assert (again.issued, again.ca_pem) == (False, first.ca_pem)
    moved = cert_secret.ensure_secret(
        api, NAMESPACE, "kept", names("w"), ["10.0.0.7"], days=365, labels={"a": "b"}
    )
    assert (moved.issued, moved.reason) == (True, "its certificate is for other names")
    files = secret_files(kube, "kept")
    assert files["ca.crt"] == moved.ca_pem != first.ca_pem
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(alt.get_values_for_type(x509.DNSName)) == sorted(names("w"))
    assert [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    secret = kube.get(api_path("v1", "secrets", NAMESPACE, "kept"))
    assert secret["metadata"]["labels"] == {"a": "b"}


def test_a_certificate_near_its_end_is_renewed(api: KubeApi, kube: Kube, tmp_path: Path) -> None:
    issued = issue(tmp_path, names("w"), [], days=0)  # it ends now
    data = {
        "ca.crt": issued.ca_cert.read_bytes(),
        "tls.crt": issued.cert.read_bytes(),
        "tls.key": issued.key.read_bytes(),
    }
    kube.create(
        api_path("v1", "secrets", NAMESPACE),
        {
            "metadata": {"name": "ending"},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )
    renewed = cert_secret.ensure_secret(api, NAMESPACE, "ending", names("w"), [], days=30)
    assert renewed.issued and renewed.reason.startswith("its certificate expires on ")
    cert = x509.load_pem_x509_certificate(secret_files(kube, "ending")["tls.crt"])
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert left > datetime.timedelta(days=29)


def test_arming_keeps_the_previous_ca_while_it_is_valid(api: KubeApi, kube: Kube) -> None:
    kube.create_object(configuration("arming"))
    path = api_path("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
                    name="arming")  # fmt: skip
    try:
        old = cert_secret.ensure_secret(api, NAMESPACE, "arming", names("w"), [], days=365)
        assert cert_secret.arm(api, "validating", "arming", old.ca_pem, "Fail")
        new = cert_secret.ensure_secret(api, NAMESPACE, "arming", names("w2"), [], days=365)
        assert cert_secret.arm(api, "validating", "arming", new.ca_pem, None)
        stored = kube.get(path)
        webhooks = stored["webhooks"]
        assert [w["failurePolicy"] for w in webhooks] == ["Fail", "Fail"]
        # What it wrote is left to no manager: Helm may apply those fields again.
        managers = {m["manager"] for m in stored["metadata"].get("managedFields", [])}
        assert "moorage-certs" not in managers, managers
        for webhook in webhooks:
            bundle = base64.b64decode(webhook["clientConfig"]["caBundle"])
            assert x509.load_pem_x509_certificates(bundle) == [
                x509.load_pem_x509_certificate(new.ca_pem),
                x509.load_pem_x509_certificate(old.ca_pem),
            ]
        assert not cert_secret.arm(api, "mutating", "arming", new.ca_pem, "Fail")
    finally:
        kube.delete(path)


def test_waiting_for_a_secret_another_issuer_writes(api: KubeApi, kube: Kube) -> None:
    with pytest.raises(KubernetesApiError, match=re.escape("has no ca.crt and tls.crt after 0 s")):
        cert_secret.wait_for_secret(api, NAMESPACE, "issued-elsewhere", 0)
    made = cert_secret.ensure_secret(api, NAMESPACE, "issued-elsewhere", names("w"), [], days=9)
    assert cert_secret.wait_for_secret(api, NAMESPACE, "issued-elsewhere", 0) == made.ca_pem


def test_mistakes_are_refused_with_what_to_do(
    api: KubeApi, kube: Kube, plane: ControlPlane
) -> None:
    kube.create(
        api_path("v1", "secrets", NAMESPACE),
        {"metadata": {"name": "opaque"}, "type": "Opaque", "data": {}},
    )
    with pytest.raises(KubernetesApiError, match=re.escape("type Opaque, not kubernetes.io/tls")):
        cert_secret.ensure_secret(api, NAMESPACE, "opaque", names("w"), [], days=9)

    result = moorage_cli("certs", "--secret", "s", "--out", "certs", status=2)
    assert "--secret keeps the certificate in a Secret: leave out --out" in result.stderr
    result = moorage_cli("certs", "--failure-policy", "Fail", status=2)
    assert "--failure-policy goes with --secret" in result.stderr
    result = moorage_cli("certs", "--secret", "s", status=1)
    assert "no Kubernetes API: run in a pod, or set MOORAGE_ADMISSION_KUBERNETES_API" in (
        result.stderr
    )
    env = {
        "MOORAGE_ADMISSION_KUBERNETES_API": plane.server,
        "MOORAGE_ADMISSION_KUBERNETES_TOKEN_FILE": str(plane.admin_token_file),
        "MOORAGE_ADMISSION_KUBERNETES_CA_FILE": str(plane.ca_file),
    }
    result = moorage_cli(
        "certs", "--secret", "cli", "--namespace", NAMESPACE, "--service", "w", env=env
    )
    assert result.stdout.startswith(f"Secret {NAMESPACE}/cli: new CA and certificate")
