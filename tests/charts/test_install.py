"""``helm install`` and ``helm upgrade`` of the chart into a real kube-apiserver, run from the
README's "Install in a cluster" section.

Each test runs one of the README's command blocks as it is written (``Readme``): helm itself,
and the kubectl commands as the requests kubectl sends; only the namespaces are the test's own
and the ``$VARIABLES`` are set (a real PostgreSQL database's connection string, a moorage on
loopback holding the chart). helm waits for the chart's hook Jobs, which ``HookJobs`` runs as a
kubelet would (``chart.py``): ``moorage certs --secret`` with the Job's ServiceAccount's token,
``moorage migrate`` against the database of the Secret. The namespaces enforce the
``restricted`` Pod Security Standard, so the Pods the Deployment and Job controllers make
exist only if the API server admitted them.

Then the tests check what a cluster would run on: the certificate Secret and the webhook
configurations armed with its CA (served by a real ``moorage webhook serve`` that the CA
verifies under the Service's name), failing closed where they should (the API server refuses
Pods in other namespaces, naming the chart's Service it could not call) and open where they
should (before the CA is in, or when the values say so). Every test uninstalls its release.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest
from cryptography import x509

from tests.charts.chart import (
    CHART,
    CHART_VERSION,
    PROFILES,
    Helm,
    HookJobs,
    HookRun,
    documents,
)
from tests.support.kube import ApiError, ControlPlane, Json, Kube, api_path
from tests.support.kube_objects import container, pod_object
from tests.support.postgres import PostgresServer
from tests.support.programs import REPO_ROOT
from tests.support.server import free_port, start_moorage, stop_process
from tests.support.waiting import wait_until

README = REPO_ROOT / "README.md"
#: A namespace the webhooks cover, where the tests try Pods.
APPS = "chart-apps"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
PIN = 'failed calling webhook "pin.images.moorage.dev"'


# -- the README, run ---------------------------------------------------------------------------


def readme_blocks() -> dict[str, list[str]]:
    """The ``sh`` blocks of "Install in a cluster", by their first line's comment."""
    text = README.read_text()
    start = text.index("\n## Install in a cluster\n")
    end = text.index("\n## ", start + 1)
    blocks: dict[str, list[str]] = {}
    for block in re.findall(r"```sh\n(.*?)```", text[start:end], re.DOTALL):
        title, *lines = block.strip().splitlines()
        assert title.startswith("# "), f"a README block without its title comment:\n{block}"
        blocks[title[2:]] = lines
    return blocks


@dataclass
class Readme:
    """Runs README command lines: ``helm`` as it is (from ``workdir``, ``charts/...`` being
    the project's), ``kubectl`` as the requests it sends, in the test's namespaces."""

    plane: ControlPlane
    helm: Helm
    workdir: Path
    namespaces: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)
    hooks: list[HookRun] = field(default_factory=list)

    @property
    def kube(self) -> Kube:
        return self.plane.admin()

    def run_block(self, title: str) -> None:
        for line in readme_blocks()[title]:
            self.run(line)

    def run(self, line: str) -> None:
        argv = [Template(word).substitute(self.variables) for word in shlex.split(line)]
        for index, word in enumerate(argv[:-1]):
            if word == "--namespace":
                argv[index + 1] = self.namespaces[argv[index + 1]]
        if argv[0] == "kubectl":
            self._kubectl(argv[1:])
        elif argv[0] == "helm":
            self._helm([str(REPO_ROOT / a) if a.startswith("charts/") else a for a in argv[1:]])
        else:
            raise AssertionError(f"the README runs {argv[0]}, which this test does not run")

    def _kubectl(self, args: list[str]) -> None:
        namespace = None
        if args[:1] == ["--namespace"]:
            namespace, args = args[1], args[2:]
        match args:
            case ["create", "namespace", name]:
                self.kube.create_namespace(self.namespaces[name])
            case ["label", "namespace", name, label]:
                key, value = label.split("=", 1)
                path = api_path("v1", "namespaces", name=self.namespaces[name])
                self.kube.patch(path, {"metadata": {"labels": {key: value}}})
            case ["create", "secret", "generic", name, *literals] if namespace:
                data = {}
                for literal in literals:
                    key, value = literal.removeprefix("--from-literal=").split("=", 1)
                    data[key] = base64.b64encode(value.encode()).decode()
                secret = {"metadata": {"name": name}, "type": "Opaque", "data": data}
                self.kube.create(api_path("v1", "secrets", namespace), secret)
            case _:
                raise AssertionError(f"kubectl {shlex.join(args)}: not a command this test runs")

    def _helm(self, args: list[str]) -> None:
        if args[0] in ("install", "upgrade", "rollback") and "--no-hooks" not in args:
            namespace = args[args.index("--namespace") + 1]
            jobs = HookJobs(self.plane, namespace, self.workdir / "hooks")
            jobs.drive(self.helm.start(*args))
            self.hooks += jobs.runs
        else:
            self.helm(*args, cwd=self.workdir)

    def uninstall(self, release: str, namespace: str) -> None:
        """``helm uninstall``, once the API server no longer calls the release's webhooks."""
        result = self.helm("uninstall", release, "--namespace", namespace, check=False)
        if "not found" not in result.stderr:
            assert result.returncode == 0, result.stderr
        wait_until(lambda: admitted(self.kube), "the API server to stop calling the webhooks")


@pytest.fixture
def apps(kube: Kube) -> str:
    if kube.find(api_path("v1", "namespaces", name=APPS)) is None:
        kube.create_namespace(APPS, wait_for_service_account=False)
    return APPS


@pytest.fixture
def readme(
    plane: ControlPlane, make_helm: Callable[..., Helm], tmp_path: Path, apps: str
) -> Iterator[Readme]:
    session = Readme(plane, make_helm(plane), tmp_path, {})
    yield session
    for release, namespace in _releases(session):
        session.uninstall(release, namespace)


def _releases(session: Readme) -> list[tuple[str, str]]:
    found = []
    for namespace in session.namespaces.values():
        listed = session.helm("list", "--namespace", namespace, "--output", "json", check=False)
        if listed.returncode == 0:
            found += [(r["name"], namespace) for r in json.loads(listed.stdout or "[]")]
    return found


# -- what the tests check ------------------------------------------------------------------------


def probe_pod(name: str = "probe") -> Json:
    """A Pod of an image of the registry, fit for a restricted namespace."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    image = "127.0.0.1:30500/team/app:1.0"
    return pod_object(name, [container("app", image, securityContext=restricted)])


def admitted(kube: Kube, namespace: str = APPS) -> bool:
    """Whether the API server admits a Pod in ``namespace`` (server-side dry run)."""
    try:
        kube.create(api_path("v1", "pods", namespace), probe_pod(), dryRun="All")
    except ApiError:
        return False
    return True


def refusal(kube: Kube, namespace: str = APPS) -> str:
    """The API server's refusal of a Pod in ``namespace``, once it refuses one."""

    def refused() -> str | None:
        try:
            kube.create(api_path("v1", "pods", namespace), probe_pod(), dryRun="All")
        except ApiError as exc:
            return exc.message
        return None

    return wait_until(refused, f"the API server to refuse Pods in {namespace}")


def certificate_secret(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    secret = kube.get(api_path("v1", "secrets", namespace, name))
    assert secret["type"] == "kubernetes.io/tls"
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def check_served_certificate(
    files: dict[str, bytes], ca_bundle: bytes, host: str, tmp: Path
) -> None:
    """A real ``moorage webhook serve`` with the Secret's certificate answers over TLS checked
    as the API server checks it: under ``host`` (the Service's name), trusting only the
    webhook configurations' caBundle."""
    tmp.mkdir()
    for key in ("tls.crt", "tls.key"):
        (tmp / key).write_bytes(files[key])
    (tmp / "bundle.pem").write_bytes(ca_bundle)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "moorage", "webhook", "serve", "--workers", "1",
         "--data", str(tmp / "data"), "--webhook-listen", f"127.0.0.1:{port}",
         "--tls-cert", str(tmp / "tls.crt"), "--tls-key", str(tmp / "tls.key")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(tmp / "bundle.pem"))

    def status_line() -> str | None:
        assert process.poll() is None, "moorage webhook serve exited"
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                return tls.recv(4096).decode().splitlines()[0]
        except ConnectionRefusedError:
            return None

    try:
        line = wait_until(status_line, f"the webhooks to answer over TLS as {host}", timeout=20)
    finally:
        stop_process(process)
    assert line == "HTTP/1.1 200 OK"


def webhook_configuration(kube: Kube, kind: str, name: str) -> Json:
    resource = {"mutating": "mutatingwebhookconfigurations",
                "validating": "validatingwebhookconfigurations"}[kind]  # fmt: skip
    return kube.get(api_path("admissionregistration.k8s.io/v1", resource, name=name))


def armed(kube: Kube, fullname: str) -> tuple[list[Json], bytes]:
    """The release's two webhooks, and their one caBundle."""
    webhooks = [
        *webhook_configuration(kube, "mutating", f"{fullname}-pin-images")["webhooks"],
        *webhook_configuration(kube, "validating", f"{fullname}-verify-images")["webhooks"],
    ]
    bundles = {w["clientConfig"].get("caBundle", "") for w in webhooks}
    assert len(bundles) == 1, bundles
    return webhooks, base64.b64decode(bundles.pop())


def wait_for_pods(kube: Kube, namespace: str, deployment: str, count: int) -> list[Json]:
    """The Pods the ReplicaSet of ``deployment`` made (as many as its replicas): made at all
    only when Pod Security admitted them; a refusal fails with the ReplicaSet's condition."""
    selector = kube.get(api_path("apps/v1", "deployments", namespace, deployment))["spec"][
        "selector"
    ]["matchLabels"]
    labels = ",".join(f"{k}={v}" for k, v in selector.items())

    def made() -> list[Json] | None:
        pods = kube.list(api_path("v1", "pods", namespace), labels)
        return pods if len(pods) == count else None

    def why() -> str:
        sets = kube.list(api_path("apps/v1", "replicasets", namespace), labels)
        conditions = [c for s in sets for c in s.get("status", {}).get("conditions", [])]
        return f"{count} Pods of {deployment}; ReplicaSet conditions: {conditions}"

    return wait_until(made, why, timeout=30)


def release_objects(readme: Readme, release: str, namespace: str) -> list[str]:
    """Every object of the release's manifest, as the API server holds it (``Kind/name``)."""
    manifest = readme.helm("get", "manifest", release, "--namespace", namespace).stdout
    found = []
    for document in documents(manifest):
        head = document.head
        resource, namespaced = readme.kube.resource(head.api_version, head.kind)
        where = (head.namespace or namespace) if namespaced else None
        stored = readme.kube.get(api_path(head.api_version, resource, where, head.name))
        found.append(f"{stored['kind']}/{stored['metadata']['name']}")
    return sorted(found)


def hook_summary(runs: list[HookRun]) -> list[tuple[str, str]]:
    """(Job, last line of its output) of each hook run, in order."""
    return [(run.job, run.output.strip().splitlines()[-1]) for run in runs]


# -- the profiles, installed -----------------------------------------------------------------------


def test_embedded_install_arms_the_webhooks_and_an_upgrade_can_open_them(
    readme: Readme, kube: Kube, tmp_path: Path
) -> None:
    namespace = readme.namespaces["moorage"] = "chart-embedded"
    readme.run_block("The embedded default")

    # The certificates Job ran before the install (the configurations did not exist yet) and
    # after it (they got the CA, then failurePolicy Fail).
    assert hook_summary(readme.hooks) == [
        ("moorage-certs", "ValidatingWebhookConfiguration moorage-verify-images: not there yet"),
        (
            "moorage-certs",
            "ValidatingWebhookConfiguration moorage-verify-images: caBundle set, "
            "failurePolicy Fail",
        ),
    ]
    assert release_objects(readme, "moorage", namespace) == [
        "ClusterRole/moorage-webhooks",
        "ClusterRoleBinding/moorage-webhooks",
        "ConfigMap/moorage",
        "Deployment/moorage",
        "MutatingWebhookConfiguration/moorage-pin-images",
        "PersistentVolumeClaim/moorage",
        "Service/moorage",
        "Service/moorage-webhooks",
        "ServiceAccount/moorage-webhooks",
        "ValidatingWebhookConfiguration/moorage-verify-images",
    ]
    assert "new CA and certificate (there was none)" in readme.hooks[0].output
    assert "kept" in readme.hooks[1].output
    files = certificate_secret(kube, namespace, "moorage-webhook-tls")
    ca = x509.load_pem_x509_certificate(files["ca.crt"])
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    service = f"moorage-webhooks.{namespace}.svc"
    assert service in names.get_values_for_type(x509.DNSName)

    webhooks, bundle = armed(kube, "moorage")
    assert x509.load_pem_x509_certificates(bundle) == [ca]
    for webhook in webhooks:
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["clientConfig"]["service"] == {
            "name": "moorage-webhooks", "namespace": namespace,
            "path": webhook["clientConfig"]["service"]["path"], "port": 443,
        }  # fmt: skip
    check_served_certificate(files, bundle, service, tmp_path / "served")
    # The hook's ServiceAccount and roles went with it.
    assert kube.find(api_path("v1", "serviceaccounts", namespace, "moorage-certs")) is None
    assert kube.find(api_path("rbac.authorization.k8s.io/v1", "clusterroles",
                              name="moorage-certs")) is None  # fmt: skip

    # The registry pod (with the webhooks' container) was admitted as restricted.
    (pod,) = wait_for_pods(kube, namespace, "moorage", 1)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["registry", "webhooks"]
    assert kube.find(api_path("v1", "persistentvolumeclaims", namespace, "moorage"))
    # Fail closed: elsewhere the API server must call the webhooks, through the chart's
    # Service, which nothing serves here; the release's own namespace is left out.
    message = refusal(kube)
    assert PIN in message and f"{service}:443" in message, message
    assert admitted(kube, namespace)

    # Upgrade to fail open: the Job ran before and after it, the certificate was kept.
    before = kube.get(api_path("v1", "secrets", namespace, "moorage-webhook-tls"))
    readme.hooks.clear()
    readme.run_block("Fail open")
    assert (
        hook_summary(readme.hooks)
        == [
            (
                "moorage-certs",
                "ValidatingWebhookConfiguration moorage-verify-images: caBundle set, "
                "failurePolicy Ignore",
            ),
        ]
        * 2
    )
    after = kube.get(api_path("v1", "secrets", namespace, "moorage-webhook-tls"))
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    webhooks, upgraded = armed(kube, "moorage")
    assert upgraded == bundle
    assert {w["failurePolicy"] for w in webhooks} == {"Ignore"}
    wait_until(lambda: admitted(kube), "the API server to admit Pods while the webhooks are down")

    # Back to the first release, which was rendered failing open (no CA then): helm applies
    # it without conflicting with what the Job wrote, and the Job arms it again after.
    readme.hooks.clear()
    readme.run("helm rollback moorage 1 --namespace moorage")
    assert hook_summary(readme.hooks) == [
        (
            "moorage-certs",
            "ValidatingWebhookConfiguration moorage-verify-images: caBundle set, "
            "failurePolicy Fail",
        ),
    ]
    webhooks, rolled_back = armed(kube, "moorage")
    assert rolled_back == bundle
    assert {w["failurePolicy"] for w in webhooks} == {"Fail"}
    assert PIN in refusal(kube)


def test_scale_out_migrates_before_install_and_upgrade(
    readme: Readme, kube: Kube, postgres_server: PostgresServer
) -> None:
    namespace = readme.namespaces["moorage"] = "chart-scale-out"
    readme.variables.update(
        POSTGRES_DSN=postgres_server.create_database("chart_scale_out"),
        S3_ACCESS_KEY="moorage",
        S3_SECRET_KEY=os.urandom(8).hex(),
    )
    readme.run_block("Scale-out")

    jobs = [(run.job, run.args[0]) for run in readme.hooks]
    install = [
        ("moorage-certs", "certs"),
        ("moorage-migrate", "migrate"),
        ("moorage-certs", "certs"),
    ]
    assert jobs == install * 2  # install, then upgrade
    migrations = [run.output for run in readme.hooks if run.job == "moorage-migrate"]
    assert re.fullmatch(r"metadata schema migrated from version 0 to \d+\n", migrations[0])
    assert re.fullmatch(r"metadata schema is up to date \(version \d+\)\n", migrations[1])

    assert {"Deployment/moorage-webhooks", "PodDisruptionBudget/moorage"} <= set(
        release_objects(readme, "moorage", namespace)
    )
    assert len(wait_for_pods(kube, namespace, "moorage", 3)) == 3
    webhook_pods = wait_for_pods(kube, namespace, "moorage-webhooks", 2)
    assert {p["spec"]["serviceAccountName"] for p in webhook_pods} == {"moorage-webhooks"}
    budget = kube.get(api_path("policy/v1", "poddisruptionbudgets", namespace, "moorage-webhooks"))
    assert budget["spec"]["minAvailable"] == 1
    webhooks, bundle = armed(kube, "moorage")
    assert {w["failurePolicy"] for w in webhooks} == {"Fail"}
    assert bundle == certificate_secret(kube, namespace, "moorage-webhook-tls")["ca.crt"]
    assert f"moorage-webhooks.{namespace}.svc:443" in refusal(kube)


def test_webhook_only_installed_from_moorage_as_an_oci_artifact(
    readme: Readme, kube: Kube, tmp_path: Path
) -> None:
    registry = start_moorage(tmp_path / "registry", workers=1)
    try:
        readme.namespaces["moorage-webhooks"] = namespace = "chart-webhook-only"
        readme.variables.update(
            REGISTRY=registry.address, POSTGRES_DSN="postgresql://moorage@postgres.db/moorage"
        )
        readme.run_block("From an OCI registry")

        package = (readme.workdir / f"moorage-{CHART_VERSION}.tgz").read_bytes()
        with urllib.request.urlopen(f"{registry.url}/v2/charts/moorage/tags/list") as answer:
            assert json.load(answer)["tags"] == [CHART_VERSION]
        (release,) = json.loads(
            readme.helm("list", "--namespace", namespace, "--output", "json").stdout
        )
        assert (release["name"], release["chart"], release["status"]) == (
            "moorage-webhooks", f"moorage-{CHART_VERSION}", "deployed",
        )  # fmt: skip
        (tmp_path / "pulled").mkdir()
        pulled = readme.helm(
            "pull", f"oci://{registry.address}/charts/moorage", "--version", CHART_VERSION,
            "--plain-http", "--destination", tmp_path / "pulled",
        )  # fmt: skip
        assert pulled.returncode == 0
        assert (tmp_path / "pulled" / f"moorage-{CHART_VERSION}.tgz").read_bytes() == package
    finally:
        registry.stop()

    assert len(wait_for_pods(kube, namespace, "moorage-webhooks-webhooks", 2)) == 2
    assert kube.find(api_path("apps/v1", "deployments", namespace, "moorage-webhooks")) is None
    webhooks, _ = armed(kube, "moorage-webhooks")
    assert {w["clientConfig"]["service"]["name"] for w in webhooks} == {"moorage-webhooks-webhooks"}
    assert {w["failurePolicy"] for w in webhooks} == {"Fail"}


def test_without_hooks_the_webhooks_stay_open(
    readme: Readme, kube: Kube, make_helm: Callable[..., Helm]
) -> None:
    """The configurations are created failing open, without a CA: until the certificates Job
    has run, a webhook nobody can call never refuses a Pod."""
    namespace = readme.namespaces["moorage"] = "chart-no-hooks"
    readme.run("kubectl create namespace moorage")
    readme.run("kubectl label namespace moorage pod-security.kubernetes.io/enforce=restricted")
    readme.run(
        f"helm install moorage {CHART.relative_to(REPO_ROOT)} --namespace moorage "
        f"--values {PROFILES['embedded'].relative_to(REPO_ROOT)} --no-hooks"
    )
    webhooks, bundle = armed(kube, "moorage")
    assert bundle == b""
    assert {w["failurePolicy"] for w in webhooks} == {"Ignore"}
    assert kube.find(api_path("v1", "secrets", namespace, "moorage-webhook-tls")) is None
    assert admitted(kube)
    wait_for_pods(kube, namespace, "moorage", 1)


def test_the_readme_blocks_are_the_ones_run_here() -> None:
    assert sorted(readme_blocks()) == sorted(
        ["The embedded default", "Fail open", "Scale-out", "From an OCI registry"]
    )
