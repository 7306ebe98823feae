"""What ``helm template`` renders for each profile, checked by a real kube-apiserver.

Every object of every profile (hooks included) goes to the API server as a server-side dry run
with strict field validation, as YAML, as helm writes it: an unknown or misplaced field, a
wrong type or an invalid value fails the test. The answers (the objects as the API server
would store them, defaults filled in) are what the other checks read:

- the shape of each profile (which workloads, replicas, volumes, strategy, Secrets);
- the webhook configurations and the webhooks' ClusterRole are what ``moorage webhook
  manifests`` prints (same rules, namespaceSelector, sideEffects...), called through the
  chart's Service;
- every pod template passes the ``restricted`` Pod Security Standard: a Pod made from it is
  admitted (dry run) in a namespace that enforces it. The opt-in containerd DaemonSet is the
  exception, and the API server says why.

cert-manager's Issuer and Certificate and the Prometheus operator's ServiceMonitor are checked
against the minimal definitions of ``crds.py``, installed for this module and removed after
it (so helm, elsewhere, sees a cluster without cert-manager).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from moorage.admission.configuration import rbac, webhook_configurations
from tests.charts import crds
from tests.charts.chart import CHART, PROFILES, Helm, find, k, pod_specs
from tests.support.clients import Clients
from tests.support.kube import ApiError, ControlPlane, Json, Kube, api_path
from tests.support.waiting import wait_until

RESTRICTED = "pod-security.kubernetes.io/enforce"
#: The profiles rendered here: the values files, and what the cluster is said to serve.
RENDERINGS: dict[str, list[str]] = {
    "embedded": ["--values", str(PROFILES["embedded"])],
    "scale-out": [
        "--values",
        str(PROFILES["scale-out"]),
        "--api-versions",
        "monitoring.coreos.com/v1",
    ],
    "webhook-only": ["--values", str(PROFILES["webhook-only"])],
    "containerd-hosts": ["--values", str(PROFILES["containerd-hosts"])],
    "cert-manager": ["--values", str(PROFILES["embedded"]), "--api-versions", "cert-manager.io/v1"],
}


@dataclass(frozen=True)
class Rendered:
    """One profile's objects as the API server answered the dry runs, in helm's order."""

    namespace: str
    objects: list[Json]

    def of(self, kind: str, name: str | None = None) -> Json:
        return find(self.objects, kind, name)

    def kinds(self) -> list[str]:
        return sorted(k(o) for o in self.objects)

    def hooks(self, obj: Json) -> str | None:
        hook: str | None = obj["metadata"].get("annotations", {}).get("helm.sh/hook")
        return hook


def _install_definitions(kube: Kube) -> None:
    collection = api_path("apiextensions.k8s.io/v1", "customresourcedefinitions")
    for definition in crds.DEFINITIONS:
        kube.create(collection, definition)
    for definition in crds.DEFINITIONS:
        path = f"{collection}/{definition['metadata']['name']}"

        def established(path: str = path) -> bool:
            conditions = kube.get(path).get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_until(established, f"{path} to be established", timeout=30)


def _remove_definitions(kube: Kube) -> None:
    collection = api_path("apiextensions.k8s.io/v1", "customresourcedefinitions")
    for definition in crds.DEFINITIONS:
        with contextlib.suppress(ApiError):
            kube.delete(f"{collection}/{definition['metadata']['name']}")
    for group in ("cert-manager.io", "monitoring.coreos.com"):

        def gone(group: str = group) -> bool:
            return kube.find(f"/apis/{group}") is None

        wait_until(gone, f"the API server to stop serving {group}", timeout=30)


@pytest.fixture(scope="module")
def rendered(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Rendered]]:
    """Every profile rendered and dry-run in a restricted namespace of its own."""
    kube = plane.admin()
    _install_definitions(kube)
    results: dict[str, Rendered] = {}
    try:
        with Clients(tmp_path_factory.mktemp("helm")) as clients:
            helm = Helm(clients)
            for profile, args in RENDERINGS.items():
                namespace = f"render-{profile}"
                kube.create_namespace(namespace, wait_for_service_account=False)
                kube.patch(
                    api_path("v1", "namespaces", name=namespace),
                    {"metadata": {"labels": {RESTRICTED: "restricted"}}},
                )
                manifests = helm.template("moorage", CHART, "--namespace", namespace, *args)
                objects = []
                for manifest in manifests:
                    try:
                        objects.append(manifest.dry_run(kube, namespace))
                    except ApiError as exc:
                        pytest.fail(f"{profile}: {manifest.source}: {exc}\n{manifest.text}")
                results[profile] = Rendered(namespace, objects)
    finally:
        _remove_definitions(kube)
    yield results


# -- every profile ---------------------------------------------------------------------------------


def test_every_object_passes_strict_validation(rendered: dict[str, Rendered]) -> None:
    """(The fixture fails on the first object refused.) Every profile renders the objects of
    its shape, hooks included."""
    assert rendered["embedded"].kinds() == sorted(
        [
            "ClusterRole/moorage-certs",
            "ClusterRole/moorage-webhooks",
            "ClusterRoleBinding/moorage-certs",
            "ClusterRoleBinding/moorage-webhooks",
            "ConfigMap/moorage",
            "Deployment/moorage",
            "Job/moorage-certs",
            "MutatingWebhookConfiguration/moorage-pin-images",
            "PersistentVolumeClaim/moorage",
            "Role/moorage-certs",
            "RoleBinding/moorage-certs",
            "Service/moorage",
            "Service/moorage-webhooks",
            "ServiceAccount/moorage-certs",
            "ServiceAccount/moorage-webhooks",
            "ValidatingWebhookConfiguration/moorage-verify-images",
        ]
    )
    scale_out = set(rendered["scale-out"].kinds()) - set(rendered["embedded"].kinds())
    assert scale_out == {
        "Deployment/moorage-webhooks",
        "Job/moorage-migrate",
        "PodDisruptionBudget/moorage",
        "PodDisruptionBudget/moorage-webhooks",
        "ServiceMonitor/moorage",
    }
    assert "PersistentVolumeClaim/moorage" not in rendered["scale-out"].kinds()
    webhook_only = rendered["webhook-only"].kinds()
    assert "Deployment/moorage-webhooks" in webhook_only
    assert not {"Deployment/moorage", "Service/moorage", "Job/moorage-migrate"} & set(webhook_only)
    cert_manager = set(rendered["cert-manager"].kinds()) - set(rendered["embedded"].kinds())
    assert cert_manager == {
        "Certificate/moorage-webhook-ca",
        "Certificate/moorage-webhook-tls",
        "Issuer/moorage-selfsigned",
        "Issuer/moorage-webhook-ca",
    }


def _without_names(configuration: Json) -> Json:
    """A webhook configuration's webhooks, without what differs by design: the caBundle (the
    chart's hook Job or cert-manager puts it in) and failurePolicy (Ignore until then)."""
    webhooks = json.loads(json.dumps(configuration["webhooks"]))
    for webhook in webhooks:
        webhook["clientConfig"].pop("caBundle", None)
        webhook.pop("failurePolicy")
    return {"kind": configuration["kind"], "webhooks": webhooks}


@pytest.mark.parametrize("profile", ["embedded", "scale-out", "webhook-only"])
def test_webhooks_are_what_moorage_webhook_manifests_prints(
    rendered: dict[str, Rendered], kube: Kube, profile: str
) -> None:
    """The same rules, namespaceSelector (kube-system and the release's namespace left out),
    sideEffects, timeout, reinvocation, called through the chart's webhooks Service."""
    chart = rendered[profile]
    namespace = chart.namespace
    expected = webhook_configurations(
        ca_pem=b"-----BEGIN CERTIFICATE-----\n", service="moorage-webhooks",
        namespace=namespace, port=443,
    )  # fmt: skip
    for printed in expected:
        printed["metadata"]["name"] += "-cli"
        answer = kube.create(
            kube.object_path(printed, collection=True), printed, dryRun="All",
            fieldValidation="Strict",
        )  # fmt: skip
        ours = chart.of(printed["kind"])
        assert _without_names(ours) == _without_names(answer)
        for webhook in ours["webhooks"]:
            # No CA yet: the webhooks fail open until the hook Job has put it in.
            assert webhook["failurePolicy"] == "Ignore"
            assert "caBundle" not in webhook["clientConfig"]
            selector = webhook["namespaceSelector"]["matchExpressions"]
            assert selector[0]["values"] == sorted(["kube-system", namespace])
            service = chart.of("Service", "moorage-webhooks")
            assert webhook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
            assert webhook["clientConfig"]["service"]["port"] == service["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("profile", ["embedded", "scale-out", "webhook-only"])
def test_the_webhooks_cluster_role_is_what_moorage_prints(
    rendered: dict[str, Rendered], profile: str
) -> None:
    chart = rendered[profile]
    role, binding = rbac(service_account="moorage-webhooks", namespace=chart.namespace)
    ours = chart.of("ClusterRole", "moorage-webhooks")
    assert ours["rules"] == role["rules"]
    bound = chart.of("ClusterRoleBinding", "moorage-webhooks")
    assert bound["subjects"] == binding["subjects"]
    assert bound["roleRef"]["name"] == ours["metadata"]["name"]
    # The pods serving the webhooks run as that account.
    (pod,) = [
        spec for o in chart.objects if (spec := pod_specs(o)) is not None
        and any(c["name"] == "webhooks" for c in spec["spec"]["containers"])
    ]  # fmt: skip
    assert pod["spec"]["serviceAccountName"] == "moorage-webhooks"


def _restricted_pod(template: Json, name: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"].get("labels", {})},
        "spec": template["spec"],
    }


def _create_accounts(kube: Kube, chart: Rendered) -> None:
    """The ServiceAccounts the pods name (a Pod naming a missing one is refused)."""
    for obj in chart.objects:
        if obj["kind"] == "ServiceAccount":
            path = api_path("v1", "serviceaccounts", chart.namespace)
            with contextlib.suppress(ApiError):
                kube.create(path, {"metadata": {"name": obj["metadata"]["name"]}})


@pytest.mark.parametrize("profile", ["embedded", "scale-out", "webhook-only", "cert-manager"])
def test_every_pod_passes_the_restricted_pod_security_standard(
    rendered: dict[str, Rendered], kube: Kube, profile: str
) -> None:
    chart = rendered[profile]
    _create_accounts(kube, chart)
    checked = []
    for obj in chart.objects:
        template = pod_specs(obj)
        if template is None:
            continue
        pod = _restricted_pod(template, f"{obj['metadata']['name']}-probe")
        kube.create(api_path("v1", "pods", chart.namespace), pod, dryRun="All")
        checked.append(k(obj))
        for container in template["spec"]["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, k(obj)
            assert context["allowPrivilegeEscalation"] is False, k(obj)
            assert context["capabilities"]["drop"] == ["ALL"], k(obj)
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}, k(obj)
            if obj["kind"] == "Deployment":  # the long-running ones answer probes
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert checked, f"{profile} has no pods"


def test_the_containerd_daemon_set_is_not_restricted_and_runs_elsewhere(
    rendered: dict[str, Rendered], kube: Kube
) -> None:
    """It writes into a hostPath, as root: the restricted namespace would refuse its Pods,
    so the profile puts it in kube-system."""
    chart = rendered["containerd-hosts"]
    daemon_set = chart.of("DaemonSet")
    assert daemon_set["metadata"]["namespace"] == "kube-system"
    assert chart.of("ConfigMap", "moorage-containerd-hosts")["metadata"]["namespace"] == (
        "kube-system"
    )
    pod = _restricted_pod(daemon_set["spec"]["template"], "containerd-hosts-probe")
    with pytest.raises(ApiError) as refused:
        kube.create(api_path("v1", "pods", chart.namespace), pod, dryRun="All")
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in refused.value.message
    assert "restricted volume types" in refused.value.message
    assert "hostPath" in refused.value.message
    assert "runAsNonRoot" in refused.value.message


# -- each profile's shape --------------------------------------------------------------------------


def _env(container: Json) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _containers(template: Json) -> dict[str, Json]:
    return {c["name"]: c for c in template["spec"]["containers"]}


def test_embedded_is_one_pod_on_its_volume_with_the_webhooks_beside_the_registry(
    rendered: dict[str, Rendered],
) -> None:
    chart = rendered["embedded"]
    registry = chart.of("Deployment", "moorage")
    assert registry["spec"]["replicas"] == 1
    assert registry["spec"]["strategy"]["type"] == "Recreate"
    template = registry["spec"]["template"]
    containers = _containers(template)
    assert sorted(containers) == ["registry", "webhooks"]
    assert containers["registry"]["args"] == ["serve", "--config", "/etc/moorage/moorage.toml"]
    assert containers["webhooks"]["args"][:2] == ["webhook", "serve"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    claim = chart.of("PersistentVolumeClaim", "moorage")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for name in ("registry", "webhooks"):  # the same SQLite file and blobs
        mounts = {m["name"]: m["mountPath"] for m in containers[name]["volumeMounts"]}
        assert mounts["data"] == "/var/lib/moorage"
        env = _env(containers[name])
        assert env["MOORAGE_STORAGE_DRIVER"] == "filesystem"
        assert env["MOORAGE_METADATA_BACKEND"] == "sqlite"
        assert env["MOORAGE_DATA"] == "/var/lib/moorage"
    # Only the webhooks' container gets a token for the Kubernetes API.
    assert template["spec"]["automountServiceAccountToken"] is False
    registry_mounts = {m["name"] for m in containers["registry"]["volumeMounts"]}
    assert "kube-api" not in registry_mounts
    assert "kube-api" in {m["name"] for m in containers["webhooks"]["volumeMounts"]}
    # The webhooks' Service selects this pod; the registry's, too.
    labels = template["metadata"]["labels"]
    for service in ("moorage", "moorage-webhooks"):
        selector = chart.of("Service", service)["spec"]["selector"]
        assert selector.items() <= labels.items(), service
    node_port = chart.of("Service", "moorage")["spec"]
    assert node_port["type"] == "NodePort"
    assert node_port["ports"][0]["nodePort"] == 30500
    hosts = _env(containers["webhooks"])["MOORAGE_ADMISSION_REGISTRY_HOSTS"].split(",")
    assert {f"moorage.{chart.namespace}.svc:5000", "127.0.0.1:30500", "localhost:30500"} <= set(
        hosts
    )
    assert not [o for o in chart.objects if o["kind"] == "PodDisruptionBudget"]


def test_scale_out_is_replicas_on_s3_and_postgres_with_webhooks_of_their_own(
    rendered: dict[str, Rendered],
) -> None:
    chart = rendered["scale-out"]
    registry = chart.of("Deployment", "moorage")
    assert registry["spec"]["replicas"] == 3
    assert registry["spec"]["strategy"]["type"] == "RollingUpdate"
    (container,) = registry["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["MOORAGE_STORAGE_DRIVER"] == "s3"
    assert env["MOORAGE_STORAGE_S3_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "moorage-s3", "key": "access-key"}
    }
    assert env["MOORAGE_STORAGE_S3_SECRET_KEY"] == {
        "secretKeyRef": {"name": "moorage-s3", "key": "secret-key"}
    }
    dsn = {"secretKeyRef": {"name": "moorage-postgres", "key": "dsn"}}
    assert env["MOORAGE_METADATA_DSN"] == dsn
    assert env["MOORAGE_METADATA_MIGRATE"] == "false"  # the hook Job migrates
    volumes = {v["name"]: v for v in registry["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]

    migrate = chart.of("Job", "moorage-migrate")
    assert chart.hooks(migrate) == "pre-install,pre-upgrade"
    (job_container,) = migrate["spec"]["template"]["spec"]["containers"]
    assert job_container["args"] == ["migrate"]
    assert _env(job_container) == {"MOORAGE_METADATA_DSN": dsn}

    webhooks = chart.of("Deployment", "moorage-webhooks")
    assert webhooks["spec"]["replicas"] == 2
    webhook_env = _env(_containers(webhooks["spec"]["template"])["webhooks"])
    assert webhook_env["MOORAGE_METADATA_DSN"] == dsn
    budget = chart.of("PodDisruptionBudget", "moorage-webhooks")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= (
        webhooks["spec"]["template"]["metadata"]["labels"].items()
    )
    selector = chart.of("Service", "moorage-webhooks")["spec"]["selector"]
    assert selector.items() <= webhooks["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= registry["spec"]["template"]["metadata"]["labels"].items()

    monitor = chart.of("ServiceMonitor", "moorage")
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert endpoints["http"]["path"] == endpoints["https"]["path"] == "/metrics"
    assert endpoints["https"]["tlsConfig"] == {
        "serverName": f"moorage-webhooks.{chart.namespace}.svc",
        "ca": {"secret": {"name": "moorage-webhook-tls", "key": "ca.crt"}},
    }
    ports = {p["name"] for s in ("moorage", "moorage-webhooks") for p in chart.of("Service", s)
             ["spec"]["ports"]}  # fmt: skip
    assert ports == set(endpoints)


def test_webhook_only_reads_the_other_registrys_postgres(rendered: dict[str, Rendered]) -> None:
    chart = rendered["webhook-only"]
    webhooks = chart.of("Deployment", "moorage-webhooks")
    env = _env(_containers(webhooks["spec"]["template"])["webhooks"])
    assert env["MOORAGE_METADATA_BACKEND"] == "postgres"
    assert env["MOORAGE_ADMISSION_REGISTRY_HOSTS"].split(",") == [
        "moorage.registry.svc:5000",
        "moorage.registry.svc.cluster.local:5000",
        "127.0.0.1:30500",
        "localhost:30500",
    ]


def test_the_certificates_hook_job_and_its_rights(rendered: dict[str, Rendered]) -> None:
    """Made by moorage: the Job runs at every phase with a role for one Secret and the two
    webhook configurations. With cert-manager: it waits for cert-manager's Secret, and
    the configurations carry cainjector's annotation."""
    chart = rendered["embedded"]
    job = chart.of("Job", "moorage-certs")
    assert chart.hooks(job) == "pre-install,pre-upgrade,post-install,post-upgrade,post-rollback"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "certs", "--secret", "moorage-webhook-tls", "--namespace", chart.namespace,
        "--service", "moorage-webhooks", "--days", "3650",
        "--mutating-webhook", "moorage-pin-images",
        "--validating-webhook", "moorage-verify-images", "--failure-policy", "Fail",
    ]  # fmt: skip
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "moorage-certs"
    role = chart.of("Role", "moorage-certs")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": ["moorage-webhook-tls"], "verbs": ["get", "update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]  # fmt: skip
    assert chart.of("ClusterRole", "moorage-certs")["rules"] == [
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": ["moorage-pin-images"], "verbs": ["get", "patch"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["validatingwebhookconfigurations"],
         "resourceNames": ["moorage-verify-images"], "verbs": ["get", "patch"]},
    ]  # fmt: skip
    # The RBAC objects are hooks too, made before the Job and deleted after it.
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        annotations = chart.of(kind, "moorage-certs")["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == chart.hooks(job)
        assert int(annotations["helm.sh/hook-weight"]) < 0

    managed = rendered["cert-manager"]
    job = managed.of("Job", "moorage-certs")
    assert managed.hooks(job) == "pre-upgrade,post-install,post-upgrade,post-rollback"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--wait-for-secret") + 1] == "300"
    assert "--days" not in container["args"]
    assert managed.of("Role", "moorage-certs")["rules"][0]["verbs"] == ["get"]
    certificate = managed.of("Certificate", "moorage-webhook-tls")
    assert certificate["spec"]["secretName"] == "moorage-webhook-tls"
    service = f"moorage-webhooks.{managed.namespace}"
    assert certificate["spec"]["dnsNames"] == [
        "moorage-webhooks",
        service,
        f"{service}.svc",
        f"{service}.svc.cluster.local",
    ]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = managed.of(kind)["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == (
            f"{managed.namespace}/moorage-webhook-tls"
        )
    for profile in ("embedded", "scale-out", "webhook-only"):
        assert not [o for o in rendered[profile].objects if o["kind"] == "Certificate"]


def test_containerd_hosts_point_the_service_names_at_the_node_port(
    rendered: dict[str, Rendered],
) -> None:
    chart = rendered["containerd-hosts"]
    files = chart.of("ConfigMap", "moorage-containerd-hosts")["data"]
    service = f"moorage.{chart.namespace}"
    assert files["host-0.toml"].splitlines()[1:] == [
        f'server = "http://{service}.svc:5000"',
        "",
        '[host."http://127.0.0.1:30500"]',
        '  capabilities = ["pull", "resolve"]',
    ]
    assert f'server = "http://{service}.svc.cluster.local:5000"' in files["host-1.toml"]
    daemon_set = chart.of("DaemonSet")
    spec = daemon_set["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["/bin/sh", "/config/write-hosts.sh"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["certs-d"]["hostPath"] == {
        "path": "/etc/containerd/certs.d",
        "type": "DirectoryOrCreate",
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = _env(container)
    assert env == {"CERTS_DIR": mounts["certs-d"], "FILES_DIR": mounts["config"]}
