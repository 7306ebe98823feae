"""``moorage certs``, ``moorage webhook manifests`` and the checks ``moorage serve`` and
``moorage webhook serve`` make of their webhook options, run as processes."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.server import free_port
from tests.support.waiting import WaitTimedOut, wait_until

CERT_FILES = ("ca.crt", "ca.key", "tls.crt", "tls.key")
HTTPS_ONLY = (
    "moorage: option --webhook-listen: webhook.listen: the admission webhooks are served over "
    "HTTPS only: give tls.cert and tls.key (moorage certs makes them)\n"
)


def moorage(
    *args: str, status: int = 0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m moorage ARGS`` without MOORAGE_* variables; its exit status checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "moorage", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, (
        f"moorage {' '.join(args)} exited with {result.returncode}, expected {status}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result


# -- moorage certs ---------------------------------------------------------------------------------


def test_certs_writes_a_ca_and_a_serving_certificate(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = moorage(
        "certs", "--out", str(out), "--namespace", "infra", "--dns", "registry.example.com",
        "--ip", "127.0.0.1", "--days", "30",
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(CERT_FILES)
    assert result.stdout.splitlines() == [
        f"CA:          {out / 'ca.crt'} (key {out / 'ca.key'})",
        f"certificate: {out / 'tls.crt'} (key {out / 'tls.key'}) for moorage, moorage.infra, "
        "moorage.infra.svc, moorage.infra.svc.cluster.local, registry.example.com, 127.0.0.1",
    ]
    assert result.stderr == ""
    for name in ("ca.key", "tls.key"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    for name in ("ca.crt", "tls.crt"):
        assert (out / name).stat().st_mode & 0o777 == 0o644

    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "moorage",
        "moorage.infra",
        "moorage.infra.svc",
        "moorage.infra.svc.cluster.local",
        "registry.example.com",
    ]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 * 86400 <= lifetime.total_seconds() <= 30 * 86400 + 600
    # A TLS client trusting the CA accepts the certificate (the handshake is tested in
    # tests/test_certs.py; here, that the files load as a chain and a trust store).
    ssl.create_default_context(cafile=str(out / "ca.crt"))
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        out / "tls.crt", out / "tls.key"
    )


def test_certs_defaults_to_the_moorage_service_in_certs(tmp_path: Path) -> None:
    moorage("certs", cwd=tmp_path)
    out = tmp_path / "certs"
    assert sorted(p.name for p in out.iterdir()) == sorted(CERT_FILES)
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "moorage.moorage.svc" in names.get_values_for_type(x509.DNSName)


def test_certs_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    moorage("certs", "--out", str(out))
    before = {name: (out / name).read_bytes() for name in CERT_FILES}
    result = moorage("certs", "--out", str(out), status=2)
    assert result.stderr == f"moorage: {out / 'ca.crt'} exists (use --force to replace it)\n"
    assert result.stdout == ""
    assert {name: (out / name).read_bytes() for name in CERT_FILES} == before

    # One file left over is enough to refuse: nothing is half-replaced.
    for name in ("ca.crt", "ca.key", "tls.crt"):
        (out / name).unlink()
    result = moorage("certs", "--out", str(out), status=2)
    assert f"{out / 'tls.key'} exists (use --force to replace it)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tls.key"]

    moorage("certs", "--out", str(out), "--force")
    after = {name: (out / name).read_bytes() for name in CERT_FILES}
    assert all(after[name] != before[name] for name in CERT_FILES)


def test_certs_rejects_a_bad_ip_address(tmp_path: Path) -> None:
    result = moorage("certs", "--out", str(tmp_path / "c"), "--ip", "not-an-ip", status=2)
    assert result.stderr.startswith("moorage: ")
    assert "not-an-ip" in result.stderr
    assert not (tmp_path / "c").exists()


# -- moorage webhook manifests ---------------------------------------------------------------------


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    moorage("certs", "--out", str(tmp_path / "certs"))
    return tmp_path / "certs" / "ca.crt"


def manifests(*args: str, status: int = 0) -> dict[str, Any]:
    result = moorage("webhook", "manifests", *args, status=status)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_manifests_with_options(ca_file: Path) -> None:
    document = manifests(
        "--ca-file", str(ca_file), "--namespace", "infra", "--timeout", "5",
        "--failure-policy", "Ignore",
    )  # fmt: skip
    assert document["apiVersion"] == "v1"
    assert document["kind"] == "List"
    items = document["items"]
    assert [(i["apiVersion"], i["kind"]) for i in items] == [
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ]
    mutating, validating, role, binding = items
    ca_bundle = base64.b64encode(ca_file.read_bytes()).decode()
    for config, path in ((mutating, "/mutate"), (validating, "/validate")):
        (hook,) = config["webhooks"]
        assert hook["clientConfig"] == {
            "service": {"name": "moorage", "namespace": "infra", "path": path, "port": 8443},
            "caBundle": ca_bundle,
        }
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_file.read_bytes()
        assert hook["timeoutSeconds"] == 5
        assert hook["failurePolicy"] == "Ignore"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["namespaceSelector"] == {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["infra", "kube-system"],
                }
            ]
        }
        resources = {r for rule in hook["rules"] for r in rule["resources"]}
        assert {"pods", "pods/ephemeralcontainers", "deployments", "cronjobs"} <= resources
        assert {
            "replicationcontrollers",
            "podtemplates",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
        } <= resources
        for rule in hook["rules"]:
            assert rule["operations"] == ["CREATE", "UPDATE"]
    assert mutating["webhooks"][0]["reinvocationPolicy"] == "IfNeeded"
    assert "reinvocationPolicy" not in validating["webhooks"][0]
    assert mutating["webhooks"][0]["name"] != validating["webhooks"][0]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "moorage", "namespace": "infra"}
    ]
    assert role["rules"][0]["verbs"] == ["get"]


def test_manifests_defaults(ca_file: Path) -> None:
    items = manifests("--ca-file", str(ca_file))["items"]
    (hook,) = items[0]["webhooks"]
    assert hook["timeoutSeconds"] == 10
    assert hook["failurePolicy"] == "Fail"
    assert hook["clientConfig"]["service"]["namespace"] == "moorage"
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        "moorage",
    ]


def test_manifests_refuse_bad_options(ca_file: Path, tmp_path: Path) -> None:
    result = moorage("webhook", "manifests", "--ca-file", str(ca_file), "--timeout", "31", status=2)
    assert result.stderr == (
        "moorage: timeoutSeconds must be between 1 and 30 (a Kubernetes limit)\n"
    )
    assert result.stdout == ""
    missing = tmp_path / "nope.crt"
    result = moorage("webhook", "manifests", "--ca-file", str(missing), status=2)
    assert result.stderr.startswith("moorage: ")
    assert str(missing) in result.stderr
    result = moorage(
        "webhook", "manifests", "--ca-file", str(ca_file), "--failure-policy", "Maybe", status=2
    )
    assert "invalid choice: 'Maybe'" in result.stderr


def test_manifests_with_a_url_for_webhooks_outside_the_cluster(ca_file: Path) -> None:
    items = manifests(
        "--ca-file", str(ca_file), "--url", "https://127.0.0.1:8443/", "--namespace", "infra"
    )["items"]
    ca_bundle = base64.b64encode(ca_file.read_bytes()).decode()
    mutating, validating, role, binding = items
    for config, path in ((mutating, "/mutate"), (validating, "/validate")):
        (hook,) = config["webhooks"]
        assert hook["clientConfig"] == {
            "url": f"https://127.0.0.1:8443{path}",
            "caBundle": ca_bundle,
        }
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [
            "infra",
            "kube-system",
        ]
    assert role["kind"] == "ClusterRole"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "moorage", "namespace": "infra"}
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ("--url", "http://127.0.0.1:8443"),
            "moorage: the webhook URL 'http://127.0.0.1:8443' must start with https:// "
            "(the API server calls webhooks over HTTPS only)\n",
        ),
        (
            ("--url", "https://127.0.0.1:8443/?x=1"),
            "moorage: the webhook URL 'https://127.0.0.1:8443/?x=1' must have no query (?...) "
            "or fragment (#...): the API server refuses them\n",
        ),
        (
            ("--url", "https://127.0.0.1:8443#hooks"),
            "moorage: the webhook URL 'https://127.0.0.1:8443#hooks' must have no query (?...) "
            "or fragment (#...): the API server refuses them\n",
        ),
        (
            ("--url", "https://127.0.0.1:8443", "--service", "moorage"),
            "moorage: --url replaces --service and --port (the API server calls the URL "
            "directly): give --url, or --service and --port\n",
        ),
        (
            ("--port", "9443", "--url", "https://127.0.0.1:8443"),
            "moorage: --url replaces --service and --port (the API server calls the URL "
            "directly): give --url, or --service and --port\n",
        ),
    ],
    ids=["http", "query", "fragment", "with-service", "with-port"],
)
def test_manifests_refuse_a_url_the_api_server_would_not_call(
    ca_file: Path, options: tuple[str, ...], message: str
) -> None:
    result = moorage("webhook", "manifests", "--ca-file", str(ca_file), *options, status=2)
    assert result.stderr == message
    assert result.stdout == ""


# -- serving the webhooks needs TLS ----------------------------------------------------------------


def test_serve_with_webhooks_but_no_tls_fails_clearly(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = moorage(
        "serve", "--listen", address, "--data", str(tmp_path / "data"),
        "--webhook-listen", f"127.0.0.1:{free_port()}",
        status=2,
    )  # fmt: skip
    assert result.stderr == HTTPS_ONLY
    assert not (tmp_path / "data").exists()  # refused before anything was done


def test_webhook_serve_without_tls_fails_clearly(tmp_path: Path) -> None:
    result = moorage("webhook", "serve", "--data", str(tmp_path / "data"), status=2)
    assert result.stderr == HTTPS_ONLY


def test_serve_with_half_the_tls_options_fails_clearly(tmp_path: Path) -> None:
    moorage("certs", "--out", str(tmp_path / "certs"))
    result = moorage(
        "serve", "--data", str(tmp_path / "data"),
        "--webhook-listen", f"127.0.0.1:{free_port()}",
        "--tls-cert", str(tmp_path / "certs" / "tls.crt"),
        status=2,
    )  # fmt: skip
    assert result.stderr == (
        "moorage: option --tls-cert: tls.key: missing (tls.cert and tls.key must be given "
        "together)\n"
    )


def test_serve_with_a_bad_webhook_address_fails_clearly(tmp_path: Path) -> None:
    moorage("certs", "--out", str(tmp_path / "certs"))
    result = moorage(
        "serve", "--data", str(tmp_path / "data"),
        "--webhook-listen", "8443",
        "--tls-cert", str(tmp_path / "certs" / "tls.crt"),
        "--tls-key", str(tmp_path / "certs" / "tls.key"),
        status=2,
    )  # fmt: skip
    assert result.stderr == (
        "moorage: option --webhook-listen: webhook.listen: expected HOST:PORT, not '8443'\n"
    )


def test_serve_with_the_webhook_port_taken_fails_clearly(tmp_path: Path) -> None:
    moorage("certs", "--out", str(tmp_path / "certs"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = moorage(
            "serve", "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "data"),
            "--webhook-listen", f"127.0.0.1:{port}",
            "--tls-cert", str(tmp_path / "certs" / "tls.crt"),
            "--tls-key", str(tmp_path / "certs" / "tls.key"),
            status=1,
        )  # fmt: skip
    assert result.stderr.startswith("moorage: cannot serve: ")
    assert "Address already in use" in result.stderr


# -- admission settings that cannot be used -------------------------------------------------------


def serve_until_exit(
    tmp_path: Path, config: Path, workers: int, limit: float = 15
) -> tuple[int | None, str]:
    """Run ``moorage serve --webhook-listen`` with ``config``; (exit status, output) once it
    exits, or (None, output) once it is seen restarting crashed workers, or after ``limit``
    seconds (then it is stopped, with every worker: it runs in a session of its own)."""
    moorage("certs", "--out", str(tmp_path / "certs"))
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    command = [
        sys.executable, "-m", "moorage", "serve", "--config", str(config),
        "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "data"),
        "--workers", str(workers), "--webhook-listen", f"127.0.0.1:{free_port()}",
        "--tls-cert", str(tmp_path / "certs" / "tls.crt"),
        "--tls-key", str(tmp_path / "certs" / "tls.key"),
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def exited_or_restarting() -> bool:
        return process.poll() is not None or "restarting" in log.read_text(errors="replace")

    try:
        with contextlib.suppress(WaitTimedOut):  # then it is stopped, and said to run on
            wait_until(exited_or_restarting, "serve to exit or restart workers", timeout=limit)
        return process.poll(), log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            'docker_config = "/nonexistent/config.json"',
            "docker config /nonexistent/config.json: cannot be read: No such file or directory",
        ),
        ('ca_file = "/nonexistent/ca.crt"', "cannot load the CA file /nonexistent/ca.crt"),
        ('kubernetes = "on"', "not running in a Kubernetes pod"),
    ],
    ids=["docker_config", "ca_file", "kubernetes"],
)
def test_unusable_admission_settings_stop_serve_with_a_clear_message(
    tmp_path: Path, setting: str, message: str, workers: int
) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text(f"[admission]\n{setting}\n")
    status, output = serve_until_exit(tmp_path, config, workers)
    assert "restarting" not in output, output
    assert status is not None and status != 0, output
    assert "Traceback" not in output, output
    assert f"moorage: {message}" in output or f"moorage: cannot serve: {message}" in output
