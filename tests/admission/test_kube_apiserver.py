"""The admission webhooks behind a real kube-apiserver, driven as users drive it.

One control plane (``../shared/tools/kube``: etcd, kube-apiserver and kube-controller-manager
on loopback; no kubelet, so Pods stay Pending, but the controllers make ReplicaSets, Pods and
Jobs), shared with the package's other modules (``conftest.py``): the webhooks are
unregistered when the module ends. One ``moorage serve`` over HTTPS (a certificate from
``moorage certs --ip 127.0.0.1``) with its webhook listener, configured with validation rules
per namespace and with the API server, token and CA its Kubernetes client reads pull secrets
through. The webhooks are registered with exactly what ``moorage webhook manifests --url``
prints, every item of the List created through the API; the token is the webhooks'
ServiceAccount's (TokenRequest), so RBAC from those manifests is what lets them read secrets.
CNCF Distribution with htpasswd over TLS is the other registry, whose credentials only pull
secrets hold.

Tests talk to the API server as kubectl does (the requests ``kubectl create deployment``,
``kubectl set image``, ``kubectl scale``, ``kubectl debug``, ``kubectl create job --from``
send, see ``tests/support/kube.py``), each in namespaces of its own, and wait on what the API
server shows, with deadlines. The last sections test moorage's Kubernetes client itself
against this API server (``tests/admission/test_kube.py`` keeps what only a stand-in server
can show).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from moorage.admission.credentials import BasicAuth
from moorage.admission.kube import ClusterConfig, KubeClient, KubernetesError
from moorage.admission.resolver import ResolveContext
from tests.support.cli import moorage_cli, pins
from tests.support.clients import make_pki
from tests.support.distribution import start_distribution
from tests.support.http import push_image, request
from tests.support.images import random_image
from tests.support.kube import (
    ApiError,
    ControlPlane,
    Json,
    Kube,
    StartingControlPlane,
    api_path,
    docker_config_secret,
)
from tests.support.kube_objects import (
    container,
    cronjob,
    deployment,
    pod_object,
    pod_spec,
    wait_for_pods,
    workload,
)
from tests.support.server import RunningRegistry, free_port, start_moorage
from tests.support.waiting import wait_until

pytestmark = pytest.mark.clients

WEBHOOK_NAMESPACE = "moorage"
WEBHOOK_ACCOUNT = "moorage"
WEBHOOK_USER = f"system:serviceaccount:{WEBHOOK_NAMESPACE}:{WEBHOOK_ACCOUNT}"
WEBHOOK_GROUPS = [
    "system:serviceaccounts",
    f"system:serviceaccounts:{WEBHOOK_NAMESPACE}",
    "system:authenticated",
]
PIN = 'admission webhook "pin.images.moorage.dev" denied the request: '
VERIFY = 'admission webhook "verify.images.moorage.dev" denied the request: '
USER, PASSWORD = "builder", f"pw-{os.urandom(6).hex()}"
HUB_DIGEST = "sha256:" + "d" * 64

MOORAGE_CONFIG = """\
[admission]
ca_file = "{distribution_ca}"
kubernetes_api = "{api}"
kubernetes_token_file = "{token_file}"
kubernetes_ca_file = "{api_ca}"

[policy]
default = "mutable"

[[policy.rules]]
name = "versions"
tags = ['regex:v[0-9]+(\\.[0-9]+)*']
mode = "immutable"

[[admission.validation.rules]]
name = "prod"
namespaces = ["prod"]
allowed_sources = ["{registry}"]
require_digest = true
refuse_latest = true

[[admission.validation.rules]]
name = "release"
namespaces = ["release"]
refuse_mutable_tags = true
"""


# -- the module's cluster --------------------------------------------------------------------------


@dataclass
class Cluster:
    plane: ControlPlane
    #: The admin (group system:masters).
    kube: Kube
    registry: RunningRegistry
    #: Trusts moorage's CA.
    tls: ssl.SSLContext
    ca_file: Path
    #: What ``moorage webhook manifests`` printed: the items of its List.
    manifests: list[Json]
    #: The webhooks' ServiceAccount token, as moorage reads it.
    token_file: Path
    distribution: RunningRegistry
    #: ``team/app:1.0`` in Distribution: its reference and digest.
    remote_image: str
    remote_digest: str

    def push(self, repository: str, tag: str) -> str:
        """Push a new image to moorage as ``repository:tag``; its digest."""
        image = random_image(layer_sizes=(1024,))
        return push_image(self.registry.address, repository, image, tag, tls=self.tls).digest

    def image(self, repository: str, tag: str | None = None) -> str:
        return f"{self.registry.address}/{repository}" + (f":{tag}" if tag else "")

    def namespace(self, name: str) -> str:
        self.kube.create_namespace(name)
        return name

    def manifest(self, kind: str) -> Json:
        (found,) = [item for item in self.manifests if item["kind"] == kind]
        return found

    def pins_api(self, namespace: str) -> list[Json]:
        """GET /v2/_moorage/pins?namespace=..., newest first."""
        reply = request(
            self.registry.address,
            "GET",
            f"/v2/_moorage/pins?namespace={namespace}",
            tls=self.tls,
        )
        assert reply.status == 200, reply.body
        found: list[Json] = reply.json()["pins"]
        return found


def write_config(path: Path, **values: Any) -> Path:
    path.write_text(MOORAGE_CONFIG.format(**values))
    return path


def wait_until_the_webhooks_answer(cluster: Cluster) -> None:
    """The API server reads webhook configurations from a cache: wait until it calls ours (a
    server-side dry run of a Pod comes back pinned)."""
    digest = cluster.push("probe/app", "1")
    pod = pod_object("probe", [container("probe", cluster.image("probe/app", "1"))])

    def pinned() -> bool:
        answer = cluster.kube.create(api_path("v1", "pods", "default"), pod, dryRun="All")
        return bool(answer["spec"]["containers"][0]["image"].endswith(f"@{digest}"))

    wait_until(pinned, "the API server to call the webhooks", timeout=30)


def remove_webhooks(kube: Kube, manifests: list[Json], registry: str) -> None:
    """Delete the webhook configurations, and wait until the API server calls neither: a
    server-side dry run of a Deployment in prod with an image moorage does not hold (which
    pinning refuses) and one of Docker Hub (which prod's rule refuses) is admitted."""
    for item in manifests:
        if item["kind"].endswith("WebhookConfiguration"):
            with contextlib.suppress(ApiError):
                kube.delete(kube.object_path(item))
    if kube.find(api_path("v1", "namespaces", name="prod")) is None:
        kube.create_namespace("prod", wait_for_service_account=False)
    probe = deployment("probe", f"{registry}/team/nope:1.0")
    probe["spec"]["template"]["spec"]["containers"].append(
        container("hub", f"docker.io/library/nginx@{HUB_DIGEST}")
    )

    def admitted() -> bool:
        try:
            kube.create(api_path("apps/v1", "deployments", "prod"), probe, dryRun="All")
        except ApiError as exc:
            if exc.status in (403, 500):  # refused, or moorage could not be called
                return False
            raise
        return True

    wait_until(admitted, "the API server to stop calling the webhooks", timeout=30)


@pytest.fixture(scope="module")
def cluster(
    kube_control_plane: StartingControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("kube-apiserver")
    with contextlib.ExitStack() as cleanup:
        starting = kube_control_plane  # shared by the package (tests/admission/conftest.py)
        # While the control plane starts: certificates, and the other registry with an image.
        certs = workdir / "certs"
        moorage_cli("certs", "--out", str(certs), "--ip", "127.0.0.1")
        pki = make_pki(workdir / "distribution-pki")
        (workdir / "distribution").mkdir()
        distribution = start_distribution(workdir / "distribution", pki, {USER: PASSWORD})
        cleanup.callback(distribution.stop)
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        remote_digest = push_image(
            distribution.address,
            "team/app",
            random_image(layer_sizes=(1024,)),
            "1.0",
            tls=ssl.create_default_context(cafile=str(pki.ca_cert)),
            headers={"Authorization": f"Basic {basic}"},
        ).digest

        plane = starting.wait()
        kube = plane.admin()
        # The webhooks' ServiceAccount, in their namespace, and a token for it.
        kube.create_namespace(WEBHOOK_NAMESPACE, wait_for_service_account=False)
        kube.create(
            api_path("v1", "serviceaccounts", WEBHOOK_NAMESPACE),
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": WEBHOOK_ACCOUNT}},
        )
        token_file = workdir / "webhook.token"
        token_file.write_text(kube.service_account_token(WEBHOOK_NAMESPACE, WEBHOOK_ACCOUNT))

        port, webhook_port = free_port(), free_port()
        config = write_config(
            workdir / "moorage.toml",
            distribution_ca=pki.ca_cert,
            api=plane.server,
            token_file=token_file,
            api_ca=plane.ca_file,
            registry=f"127.0.0.1:{port}",
        )
        ca_file = certs / "ca.crt"
        registry = start_moorage(
            workdir / "moorage",
            port=port,
            args=("--config", str(config), "--webhook-listen", f"127.0.0.1:{webhook_port}"),
            tls=(certs / "tls.crt", certs / "tls.key", ca_file),
        )
        cleanup.callback(registry.stop)

        printed = moorage_cli(
            "webhook", "manifests", "--url", f"https://127.0.0.1:{webhook_port}",
            "--ca-file", str(ca_file), "--namespace", WEBHOOK_NAMESPACE,
            "--service-account", WEBHOOK_ACCOUNT,
        ).stdout  # fmt: skip
        manifests: list[Json] = json.loads(printed)["items"]
        # The control plane outlives the module: the webhooks go before moorage stops.
        cleanup.callback(remove_webhooks, kube, manifests, f"127.0.0.1:{port}")
        for item in manifests:
            kube.create_object(item)
        made = Cluster(
            plane,
            kube,
            registry,
            ssl.create_default_context(cafile=str(ca_file)),
            ca_file,
            manifests,
            token_file,
            distribution,
            f"{distribution.address}/team/app:1.0",
            remote_digest,
        )
        wait_until_the_webhooks_answer(made)
        yield made
    assert "Traceback" not in registry.logs(), registry.logs()


# -- objects as kubectl makes them -----------------------------------------------------------------


def create_deployment(kube: Kube, namespace: str, name: str, image: str, replicas: int = 1) -> Json:
    return kube.create(
        api_path("apps/v1", "deployments", namespace),
        deployment(name, image, replicas),
        fieldManager="kubectl-create",
        fieldValidation="Strict",
    )


def job_from_cronjob(name: str, cron: Json) -> Json:
    """What ``kubectl create job NAME --from=cronjob/CRON`` sends: the CronJob's job template,
    owned by it, annotated as started by hand."""
    template = cron["spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "labels": template.get("metadata", {}).get("labels", {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cron["metadata"]["name"],
                    "uid": cron["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def images(spec: Json, lists: tuple[str, ...] = ("initContainers", "containers")) -> list[str]:
    """The images of a pod spec, init containers first."""
    return [c["image"] for name in lists for c in spec.get(name, [])]


def template_images(obj: Json) -> list[str]:
    spec = obj["spec"]
    if "jobTemplate" in spec:  # a CronJob (items of a list do not say their kind)
        spec = spec["jobTemplate"]["spec"]
    return images(spec["template"]["spec"])


def owner(obj: Json) -> str:
    """The name of the object's controller."""
    (reference,) = [r for r in obj["metadata"]["ownerReferences"] if r.get("controller")]
    name: str = reference["name"]
    return name


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the API server's 403 for ``call(*args, **kwargs)``."""
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 403, caught.value
    return caught.value.message


# -- the registered configurations -----------------------------------------------------------------


def test_the_printed_configurations_are_what_the_api_server_calls(cluster: Cluster) -> None:
    for kind, path in (
        ("MutatingWebhookConfiguration", "/mutate"),
        ("ValidatingWebhookConfiguration", "/validate"),
    ):
        printed = cluster.manifest(kind)
        (registered,) = cluster.kube.get(cluster.kube.object_path(printed))["webhooks"]
        assert registered["clientConfig"] == printed["webhooks"][0]["clientConfig"]
        assert registered["clientConfig"]["url"].endswith(path)
        assert "service" not in registered["clientConfig"]


def test_the_webhooks_own_namespace_and_kube_system_are_left_alone(cluster: Cluster) -> None:
    """A fail-closed webhook must never stand in the way of the Pods that would repair it."""
    unknown = cluster.image("team/nope", "1.0")
    pod = pod_object("repair", [container("app", unknown)])
    for namespace in (WEBHOOK_NAMESPACE, "kube-system"):
        account = api_path("v1", "serviceaccounts", namespace, "default")
        wait_until(
            partial(cluster.kube.find, account),
            f"the default ServiceAccount of {namespace}",
            timeout=30,
        )
        answer = cluster.kube.create(api_path("v1", "pods", namespace), pod, dryRun="All")
        assert images(answer["spec"]) == [unknown]
    message = refused(cluster.kube.create, api_path("v1", "pods", "default"), pod, dryRun="All")
    assert f"{unknown} is not in this registry" in message


# -- CronJobs (first: the controller's own Job is checked last) ------------------------------------


@dataclass
class Nightly:
    namespace: str
    cronjob: Json
    digest: str


@pytest.fixture(scope="module")
def nightly(cluster: Cluster) -> Nightly:
    """``cron/nightly``, made once for the module. It runs every 5 s (``@every 5s``, the
    schedule syntax the CronJob controller takes for intervals), so the controller makes its
    first Job within seconds; one at a time (Forbid), as its Pods never finish here."""
    namespace = cluster.namespace("cron")
    image = cluster.image("team/nightly", "1.0")
    digest = cluster.push("team/nightly", "1.0")
    spec = pod_spec([container("job", image)], restartPolicy="OnFailure")
    made = cronjob("nightly", spec, schedule="@every 5s")
    made["spec"]["concurrencyPolicy"] = "Forbid"
    created = cluster.kube.create(api_path("batch/v1", "cronjobs", namespace), made)
    return Nightly(namespace, created, digest)


def test_a_cronjob_and_a_job_started_from_it_by_hand(cluster: Cluster, nightly: Nightly) -> None:
    pinned = [f"{cluster.image('team/nightly', '1.0')}@{nightly.digest}"]
    assert template_images(nightly.cronjob) == pinned
    # kubectl create job manual --from=cronjob/nightly
    job = cluster.kube.create(
        api_path("batch/v1", "jobs", nightly.namespace), job_from_cronjob("manual", nightly.cronjob)
    )
    assert template_images(job) == pinned
    (pod,) = wait_for_pods(cluster.kube, nightly.namespace, "job-name=manual", 1)
    assert images(pod["spec"]) == pinned


# -- Deployments: one build per rollout ------------------------------------------------------------


def test_a_deployment_its_replicaset_and_pods_run_the_pinned_digest(cluster: Cluster) -> None:
    namespace = cluster.namespace("rollout")
    image = cluster.image("team/web", "today")
    digest = cluster.push("team/web", "today")
    created = create_deployment(cluster.kube, namespace, "web", image, replicas=2)
    pinned = f"{image}@{digest}"
    assert template_images(created) == [pinned]

    path = api_path("apps/v1", "replicasets", namespace)
    (replica_set,) = wait_until(
        lambda: cluster.kube.list(path, "app=web") or None, "the ReplicaSet", timeout=30
    )
    assert owner(replica_set) == "web"
    assert template_images(replica_set) == [pinned]
    pods = wait_for_pods(cluster.kube, namespace, "app=web", 2)
    assert [images(p["spec"]) for p in pods] == [[pinned], [pinned]]
    assert {owner(p) for p in pods} == {replica_set["metadata"]["name"]}


def test_a_moved_tag_does_not_reach_new_replicas_of_a_running_deployment(
    cluster: Cluster,
) -> None:
    namespace = cluster.namespace("scale")
    image = cluster.image("team/api", "today")
    first = cluster.push("team/api", "today")
    create_deployment(cluster.kube, namespace, "api", image, replicas=2)
    wait_for_pods(cluster.kube, namespace, "app=api", 2)

    moved = cluster.push("team/api", "today")  # the tag now names another build
    assert moved != first
    # kubectl scale deployment/api --replicas=4
    scale = api_path("apps/v1", "deployments", namespace, "api", "scale")
    cluster.kube.patch(scale, {"spec": {"replicas": 4}}, "merge")
    pods = wait_for_pods(cluster.kube, namespace, "app=api", 4)
    assert {running for p in pods for running in images(p["spec"])} == {f"{image}@{first}"}
    replica_sets = cluster.kube.list(api_path("apps/v1", "replicasets", namespace), "app=api")
    assert len(replica_sets) == 1


def test_setting_the_image_again_rolls_to_where_the_tag_points_now(cluster: Cluster) -> None:
    namespace = cluster.namespace("roll")
    image = cluster.image("team/worker", "today")
    first = cluster.push("team/worker", "today")
    create_deployment(cluster.kube, namespace, "worker", image, replicas=2)
    wait_for_pods(cluster.kube, namespace, "app=worker", 2)
    moved = cluster.push("team/worker", "today")

    # kubectl set image deployment/worker worker=IMAGE: the same tag, written again
    patched = cluster.kube.patch(
        api_path("apps/v1", "deployments", namespace, "worker"),
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "worker"}],
                        "containers": [{"image": image, "name": "worker"}],
                    }
                }
            }
        },
        fieldManager="kubectl-set",
    )
    assert template_images(patched) == [f"{image}@{moved}"]

    path = api_path("apps/v1", "replicasets", namespace)

    def two_replica_sets() -> dict[str, str] | None:
        found = cluster.kube.list(path, "app=worker")
        if len(found) != 2:
            return None
        return {r["metadata"]["name"]: template_images(r)[0] for r in found}

    by_replica_set = wait_until(two_replica_sets, "a second ReplicaSet", timeout=30)
    assert sorted(by_replica_set.values()) == sorted([f"{image}@{first}", f"{image}@{moved}"])

    # The new ReplicaSet's Pods run the new build; every Pod runs its ReplicaSet's one build.
    pods_path = api_path("v1", "pods", namespace)

    def new_build_started() -> list[Json] | None:
        found = cluster.kube.list(pods_path, "app=worker")
        running = [images(p["spec"]) for p in found]
        return found if [f"{image}@{moved}"] in running else None

    for pod in wait_until(new_build_started, "a Pod of the new build", timeout=30):
        assert images(pod["spec"]) == [by_replica_set[owner(pod)]]

    history = pins(cluster.registry, 2, "--namespace", namespace)
    assert [(p["kind"], p["name"], p["digest"]) for p in history] == [
        ("Deployment", "worker", moved),
        ("Deployment", "worker", first),
    ]


# -- every kind of workload, init and ephemeral containers -----------------------------------------


def test_statefulsets_daemonsets_and_jobs_with_init_containers(cluster: Cluster) -> None:
    namespace = cluster.namespace("kinds")
    app, tools = cluster.image("team/kinds", "1.0"), cluster.image("team/tools", "1.0")
    app_digest, tools_digest = cluster.push("team/kinds", "1.0"), cluster.push("team/tools", "1.0")
    pinned = [f"{tools}@{tools_digest}", f"{tools}@{tools_digest}", f"{app}@{app_digest}"]

    def spec(**fields: Any) -> Json:
        init = [
            container("setup", tools, command=["true"]),
            container("proxy", tools, restartPolicy="Always"),  # a native sidecar
        ]
        return pod_spec([container("app", app)], init, **fields)

    for kind, name, extra in [
        ("StatefulSet", "db", {"replicas": 1, "serviceName": "db"}),
        ("DaemonSet", "agent", {}),
        ("Job", "migrate", {}),
    ]:
        fields = {"restartPolicy": "Never"} if kind == "Job" else {}
        resource = f"{kind.lower()}s"
        api = "batch/v1" if kind == "Job" else "apps/v1"
        created = cluster.kube.create(
            api_path(api, resource, namespace), workload(kind, name, spec(**fields), **extra)
        )
        assert template_images(created) == pinned, kind

    # The controllers' Pods (no node runs the DaemonSet's) run what was pinned.
    for selector in ("app=db", "app=migrate"):
        (pod,) = wait_for_pods(cluster.kube, namespace, selector, 1)
        assert images(pod["spec"]) == pinned


def test_init_containers_and_ephemeral_containers_of_a_pod(cluster: Cluster) -> None:
    namespace = cluster.namespace("debug")
    app, tools = cluster.image("team/shell", "1.0"), cluster.image("team/debug", "1.0")
    app_digest, tools_digest = cluster.push("team/shell", "1.0"), cluster.push("team/debug", "1.0")
    created = cluster.kube.create(
        api_path("v1", "pods", namespace),
        pod_object("shell", [container("app", app)], init=[container("setup", tools)]),
    )
    assert images(created["spec"]) == [f"{tools}@{tools_digest}", f"{app}@{app_digest}"]

    # kubectl debug shell --image=TOOLS: a strategic merge patch of pods/ephemeralcontainers
    moved = cluster.push("team/debug", "1.0")
    debugged = cluster.kube.patch(
        api_path("v1", "pods", namespace, "shell", "ephemeralcontainers"),
        {
            "spec": {
                "ephemeralContainers": [
                    {
                        "image": tools,
                        "name": "debugger-1",
                        "resources": {},
                        "terminationMessagePolicy": "File",
                    }
                ]
            }
        },
    )
    # The debugger gets where the tag points now; the containers already there keep theirs.
    assert images(debugged["spec"], ("initContainers", "containers", "ephemeralContainers")) == [
        f"{tools}@{tools_digest}",
        f"{app}@{app_digest}",
        f"{tools}@{moved}",
    ]
    found = pins(cluster.registry, 3, "--namespace", namespace)
    assert [(p["kind"], p["container_kind"], p["container"], p["digest"]) for p in found] == [
        ("Pod", "ephemeralContainers", "debugger-1", moved),
        ("Pod", "containers", "app", app_digest),
        ("Pod", "initContainers", "setup", tools_digest),
    ]


# -- dry runs, unknown images ----------------------------------------------------------------------


def test_a_server_side_dry_run_is_pinned_and_records_no_pin(cluster: Cluster) -> None:
    namespace = cluster.namespace("dry")
    image = cluster.image("team/preview", "today")
    digest = cluster.push("team/preview", "today")
    deployments = api_path("apps/v1", "deployments", namespace)

    # kubectl create deployment preview --image=IMAGE --dry-run=server
    answer = cluster.kube.create(deployments, deployment("preview", image), dryRun="All")
    assert template_images(answer) == [f"{image}@{digest}"]
    assert cluster.kube.find(api_path("apps/v1", "deployments", namespace, "preview")) is None

    # A real create afterwards is recorded: by then, a pin of the dry run would be there too.
    create_deployment(cluster.kube, namespace, "real", image)
    (pin,) = pins(cluster.registry, 1, "--namespace", namespace)
    assert (pin["kind"], pin["name"], pin["digest"]) == ("Deployment", "real", digest)


def test_an_image_moorage_does_not_hold_is_refused_naming_it(cluster: Cluster) -> None:
    namespace = cluster.namespace("unknown")
    cluster.push("team/known", "1.0")
    for image in (cluster.image("team/nope", "1.0"), cluster.image("team/known", "2.0")):
        message = refused(create_deployment, cluster.kube, namespace, "web", image)
        assert message.startswith(PIN + "moorage could not pin every image to a digest"), message
        assert f'container "web" (containers) image "{image}": {image} is not in this registry' in (
            message
        )
    assert cluster.kube.list(api_path("apps/v1", "deployments", namespace)) == []


# -- validation rules per namespace ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rule_namespaces(cluster: Cluster) -> None:
    """prod and release, which rules cover, and dev, which none does."""
    for name in ("prod", "dev", "release"):
        cluster.namespace(name)


@pytest.mark.usefixtures("rule_namespaces")
def test_validation_rules_apply_per_namespace(cluster: Cluster) -> None:
    release, today = cluster.image("team/app", "v1"), cluster.image("team/app", "today")
    release_digest, today_digest = cluster.push("team/app", "v1"), cluster.push("team/app", "today")
    hub = f"docker.io/library/nginx@{HUB_DIGEST}"

    # prod: moorage's images only, with a digest (pinning adds it before the rule is checked).
    created = create_deployment(cluster.kube, "prod", "api", release, replicas=1)
    assert template_images(created) == [f"{release}@{release_digest}"]
    (pod,) = wait_for_pods(cluster.kube, "prod", "app=api", 1)  # the controllers pass too
    assert images(pod["spec"]) == [f"{release}@{release_digest}"]
    assert refused(create_deployment, cluster.kube, "prod", "hub", hub) == (
        VERIFY + 'moorage refused this Deployment: rule "prod": container "hub" (containers) '
        f'image "{hub}" does not come from an allowed source ({cluster.registry.address})'
    )
    # dev: no rule.
    assert template_images(create_deployment(cluster.kube, "dev", "hub", hub)) == [hub]
    # release: only tags the tag policy makes immutable, also once pinned, or digests alone.
    assert template_images(create_deployment(cluster.kube, "release", "api", release)) == [
        f"{release}@{release_digest}"
    ]
    pinned_today = f"{today}@{today_digest}"
    assert refused(create_deployment, cluster.kube, "release", "web", today) == (
        VERIFY + 'moorage refused this Deployment: rule "release": container "web" (containers) '
        f'image "{pinned_today}" uses the tag "today", which is mutable (tag policy: the default '
        "(mutable)): use an immutable tag, or a digest without a tag (image@sha256:...)"
    )
    by_digest = f"{cluster.image('team/app')}@{today_digest}"
    assert template_images(create_deployment(cluster.kube, "release", "web", by_digest)) == [
        by_digest
    ]


@pytest.mark.usefixtures("rule_namespaces")
def test_latest_is_refused_in_prod_and_pinned_in_dev(cluster: Cluster) -> None:
    latest = cluster.push("team/latest", "latest")
    pinned = f"{cluster.image('team/latest', 'latest')}@{latest}"
    for name, image in [
        ("explicit", cluster.image("team/latest", "latest")),
        ("implicit", cluster.image("team/latest")),
    ]:
        # kubectl -n prod create deployment NAME --image=IMAGE
        message = refused(create_deployment, cluster.kube, "prod", name, image)
        assert message == (
            VERIFY + f'moorage refused this Deployment: rule "prod": container "{name}" '
            f'(containers) image "{pinned}" uses the tag "latest": name a version, or a digest '
            "without a tag (image@sha256:...)"
        )
        created = create_deployment(cluster.kube, "dev", name, image)
        assert template_images(created) == [pinned]


# -- the pin log -----------------------------------------------------------------------------------


def test_the_pin_log_shows_what_was_admitted(cluster: Cluster) -> None:
    namespace = cluster.namespace("audit")
    web, job = cluster.image("team/log", "1.0"), cluster.image("team/report", "2.0")
    web_digest, job_digest = cluster.push("team/log", "1.0"), cluster.push("team/report", "2.0")
    create_deployment(cluster.kube, namespace, "web", web, replicas=2)
    cluster.kube.create(
        api_path("batch/v1", "cronjobs", namespace),
        cronjob("report", pod_spec([container("report", job)], restartPolicy="OnFailure")),
    )
    wait_for_pods(cluster.kube, namespace, "app=web", 2)  # already pinned: no pins of their own

    expected = {
        ("Deployment", "web", "web", web, web_digest),
        ("CronJob", "report", "report", job, job_digest),
    }
    # moorage pins --namespace audit --json, as an operator asks
    found = pins(cluster.registry, 2, "--namespace", namespace)
    assert {(p["kind"], p["name"], p["container"], p["image"], p["digest"]) for p in found} == (
        expected
    )
    for pin in found:
        assert (pin["namespace"], pin["source"], pin["user"]) == (namespace, "local", "admin")
    # GET /v2/_moorage/pins?namespace=audit
    assert cluster.pins_api(namespace) == found


# -- pull secrets, read through the API with the webhooks' ServiceAccount --------------------------


def add_pull_secret(cluster: Cluster, namespace: str) -> None:
    address = cluster.distribution.address
    cluster.kube.create(
        api_path("v1", "secrets", namespace),
        docker_config_secret(namespace, "regcred", {address: (USER, PASSWORD)}),
    )


def test_images_of_another_registry_are_pinned_with_pull_secrets(cluster: Cluster) -> None:
    namespace = cluster.namespace("team-b")
    add_pull_secret(cluster, namespace)
    image, pinned = cluster.remote_image, f"{cluster.remote_image}@{cluster.remote_digest}"

    # The Pod's own imagePullSecrets.
    pod = pod_object("direct", [container("app", image)], imagePullSecrets=[{"name": "regcred"}])
    created = cluster.kube.create(api_path("v1", "pods", namespace), pod)
    assert images(created["spec"]) == [pinned]
    # Its ServiceAccount's. For a Pod, the API server copies them into the Pod before the
    # webhooks see it; for a Deployment, the webhook reads the ServiceAccount its template names.
    cluster.kube.create(
        api_path("v1", "serviceaccounts", namespace),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "builder"},
            "imagePullSecrets": [{"name": "regcred"}],
        },
    )
    pod = pod_object("by-account", [container("app", image)], serviceAccountName="builder")
    created = cluster.kube.create(api_path("v1", "pods", namespace), pod)
    assert created["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert images(created["spec"]) == [pinned]
    built = deployment("built", image)
    built["spec"]["template"]["spec"]["serviceAccountName"] = "builder"
    created = cluster.kube.create(api_path("apps/v1", "deployments", namespace), built)
    assert template_images(created) == [pinned]
    (replica,) = wait_for_pods(cluster.kube, namespace, "app=built", 1)
    assert images(replica["spec"]) == [pinned]
    # Without either, Distribution lets nobody in.
    message = refused(
        cluster.kube.create,
        api_path("v1", "pods", namespace),
        pod_object("bare", [container("app", image)]),
    )
    assert message.startswith(PIN), message
    assert f"{image}: unauthorized: no credentials for {cluster.distribution.address}" in message

    found = pins(cluster.registry, 3, "--namespace", namespace)
    assert {(p["kind"], p["name"], p["digest"], p["source"]) for p in found} == {
        ("Pod", "direct", cluster.remote_digest, "remote"),
        ("Pod", "by-account", cluster.remote_digest, "remote"),
        ("Deployment", "built", cluster.remote_digest, "remote"),
    }


def test_without_the_rbac_binding_pull_secrets_cannot_be_read(cluster: Cluster) -> None:
    namespace = cluster.namespace("team-c")
    add_pull_secret(cluster, namespace)
    pods = api_path("v1", "pods", namespace)
    pod = pod_object(
        "app", [container("app", cluster.remote_image)], imagePullSecrets=[{"name": "regcred"}]
    )
    binding = cluster.manifest("ClusterRoleBinding")
    binding_path = cluster.kube.object_path(binding)

    def may_read_secrets() -> bool:
        return cluster.kube.can(WEBHOOK_USER, WEBHOOK_GROUPS, "get", "secrets", namespace)

    assert may_read_secrets()
    cluster.kube.delete(binding_path)
    try:
        wait_until(lambda: not may_read_secrets(), "RBAC to take the binding away", timeout=30)
        message = refused(cluster.kube.create, pods, pod)
        assert message.startswith(PIN + "moorage could not pin every image"), message
        image, address = cluster.remote_image, cluster.distribution.address
        assert (
            f'container "app" (containers) image "{image}": {image}: unauthorized: no '
            f"credentials for {address} in the pull secrets or the docker config; the pull "
            f"secrets could not be read: the webhook may not read secrets in namespace "
            f'{namespace} (secrets "regcred" is forbidden: User "{WEBHOOK_USER}" cannot get '
            f'resource "secrets" in API group "" in the namespace "{namespace}"): give the '
            "webhook's ServiceAccount get on secrets and serviceaccounts"
        ) in message
    finally:
        cluster.kube.create_object(binding)  # as printed by moorage webhook manifests
    wait_until(may_read_secrets, "RBAC to give the binding back", timeout=30)
    created = cluster.kube.create(pods, pod)
    assert images(created["spec"]) == [f"{cluster.remote_image}@{cluster.remote_digest}"]


# -- moorage's Kubernetes client against this API server -------------------------------------------

CLIENT_NAMESPACE = "kube-client"


@dataclass
class ClientSetup:
    cluster: Cluster
    #: Another ServiceAccount of the webhooks' namespace, which no binding lets read secrets.
    stranger_token: str


def secret(name: str, kind: str, data: dict[str, bytes]) -> Json:
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": kind,
        "data": encoded,
    }


@pytest.fixture(scope="module")
def client_setup(cluster: Cluster) -> ClientSetup:
    """Pull secrets of every shape, and ServiceAccounts naming them, in ``kube-client``."""
    kube, namespace = cluster.kube, cluster.namespace(CLIENT_NAMESPACE)
    secrets = api_path("v1", "secrets", namespace)
    kube.create(
        secrets,
        docker_config_secret(namespace, "regcred", {"registry.example.com": ("team-a", "s3cret")}),
    )
    kube.create(secrets, docker_config_secret(namespace, "hub", {"docker.io": ("teama", "tok")}))
    legacy = {"legacy.example.com": {"username": "old", "password": "0ld-pass"}}
    kube.create(
        secrets,
        secret("legacy", "kubernetes.io/dockercfg", {".dockercfg": json.dumps(legacy).encode()}),
    )
    kube.create(secrets, secret("app-settings", "Opaque", {"LOG_LEVEL": b"debug"}))
    # JSON, so the API server takes it, but not a Docker config.
    broken = {".dockerconfigjson": b'{"auths": {"registry.example.com": "yes"}}'}
    kube.create(secrets, secret("broken", "kubernetes.io/dockerconfigjson", broken))
    accounts = api_path("v1", "serviceaccounts", namespace)
    kube.create(
        accounts,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "builder"},
            "imagePullSecrets": [{"name": "hub"}, {"name": "regcred"}],
        },
    )
    kube.patch(
        api_path("v1", "serviceaccounts", namespace, "default"),
        {"imagePullSecrets": [{"name": "legacy"}, {"name": "missing"}]},
        "merge",
    )
    kube.create(
        api_path("v1", "serviceaccounts", WEBHOOK_NAMESPACE),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "stranger"}},
    )
    return ClientSetup(cluster, kube.service_account_token(WEBHOOK_NAMESPACE, "stranger"))


@pytest.fixture
async def client(client_setup: ClientSetup, tmp_path: Path) -> AsyncIterator[KubeClient]:
    """A client as moorage makes it from its settings: this API server, the webhooks'
    token (in a file of the test's own), the API server's CA."""
    cluster = client_setup.cluster
    token_file = tmp_path / "token"
    token_file.write_text(cluster.token_file.read_text())
    made = KubeClient(
        ClusterConfig.explicit(cluster.plane.server, token_file, cluster.plane.ca_file)
    )
    yield made
    await made.close()


async def test_client_reads_secrets_and_service_accounts(client: KubeClient) -> None:
    found = await client.get_secret(CLIENT_NAMESPACE, "regcred")
    assert found is not None
    assert (found.namespace, found.name, found.type) == (
        CLIENT_NAMESPACE,
        "regcred",
        "kubernetes.io/dockerconfigjson",
    )
    config = json.loads(found.data[".dockerconfigjson"])
    assert config["auths"]["registry.example.com"]["username"] == "team-a"
    account = await client.get_service_account(CLIENT_NAMESPACE, "builder")
    assert account is not None and account.image_pull_secrets == ("hub", "regcred")
    assert await client.get_secret(CLIENT_NAMESPACE, "missing") is None
    assert await client.get_service_account(CLIENT_NAMESPACE, "ghost") is None


async def test_client_pull_secrets_of_the_workload(
    client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    context = ResolveContext(
        CLIENT_NAMESPACE, ("regcred", "missing", "app-settings", "broken"), "builder"
    )
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        found = await client.pull_secret_credentials(context)
    # The workload names its secrets: its ServiceAccount's are not used.
    assert [c.source for c in found] == [f"pull secret {CLIENT_NAMESPACE}/regcred"]
    assert found[0].for_host("registry.example.com") == BasicAuth("team-a", "s3cret")
    assert f"imagePullSecret {CLIENT_NAMESPACE}/missing not found; skipped" in caplog.text
    assert f"pull secret {CLIENT_NAMESPACE}/broken: " in caplog.text


async def test_client_pull_secrets_of_service_accounts(
    client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        (legacy,) = await client.pull_secret_credentials(ResolveContext(CLIENT_NAMESPACE))
        named = await client.pull_secret_credentials(
            ResolveContext(CLIENT_NAMESPACE, (), "builder")
        )
        ghost = await client.pull_secret_credentials(ResolveContext(CLIENT_NAMESPACE, (), "ghost"))
    assert legacy.source == f"pull secret {CLIENT_NAMESPACE}/legacy"
    assert legacy.for_host("legacy.example.com") == BasicAuth("old", "0ld-pass")
    assert f"imagePullSecret {CLIENT_NAMESPACE}/missing not found" in caplog.text
    assert [c.source for c in named] == [
        f"pull secret {CLIENT_NAMESPACE}/hub",
        f"pull secret {CLIENT_NAMESPACE}/regcred",
    ]
    assert named[0].for_host("docker.io", "library/nginx") == BasicAuth("teama", "tok")
    assert ghost == []
    assert f"service account {CLIENT_NAMESPACE}/ghost not found" in caplog.text


async def test_client_without_rbac_says_which_rbac_is_missing(
    client: KubeClient, client_setup: ClientSetup
) -> None:
    client.config.token_file.write_text(client_setup.stranger_token)
    stranger = f"system:serviceaccount:{WEBHOOK_NAMESPACE}:stranger"
    with pytest.raises(KubernetesError) as caught:
        await client.pull_secret_credentials(ResolveContext(CLIENT_NAMESPACE, ("regcred",)))
    assert str(caught.value) == (
        f'the webhook may not read secrets in namespace {CLIENT_NAMESPACE} (secrets "regcred" '
        f'is forbidden: User "{stranger}" cannot get resource "secrets" in API group "" in the '
        f'namespace "{CLIENT_NAMESPACE}"): give the webhook\'s ServiceAccount get on secrets and '
        'serviceaccounts (a ClusterRole with apiGroups [""], resources [secrets, '
        "serviceaccounts], verbs [get], and a ClusterRoleBinding to it)"
    )
    with pytest.raises(KubernetesError) as caught:
        await client.pull_secret_credentials(ResolveContext(CLIENT_NAMESPACE))
    assert str(caught.value).startswith(
        f"the webhook may not read serviceaccounts in namespace {CLIENT_NAMESPACE} "
        f'(serviceaccounts "default" is forbidden: User "{stranger}" cannot get resource '
        '"serviceaccounts"'
    )


async def test_client_rereads_a_rewritten_token_file(
    client: KubeClient, client_setup: ClientSetup
) -> None:
    token_file = client.config.token_file
    webhook_token = token_file.read_text()
    token_file.write_text(client_setup.stranger_token)
    with pytest.raises(KubernetesError, match="may not read secrets"):
        await client.get_secret(CLIENT_NAMESPACE, "hub")
    token_file.write_text(webhook_token)
    assert await client.get_secret(CLIENT_NAMESPACE, "hub") is not None


async def test_client_with_a_token_the_api_server_does_not_take(client: KubeClient) -> None:
    token_file = client.config.token_file
    token_file.write_text("not-a-token\n")
    with pytest.raises(KubernetesError) as caught:
        await client.get_secret(CLIENT_NAMESPACE, "regcred")
    server = client.config.server
    assert str(caught.value) == (
        f"the Kubernetes API at {server} refused the webhook's ServiceAccount token from "
        f"{token_file} (Unauthorized): is it expired, revoked, or another cluster's?"
    )
    token_file.unlink()
    with pytest.raises(KubernetesError, match=f"cannot read the token file {token_file}: "):
        await client.get_secret(CLIENT_NAMESPACE, "regcred")


async def test_client_that_does_not_trust_the_api_server(
    client: KubeClient, client_setup: ClientSetup
) -> None:
    cluster = client_setup.cluster
    config = ClusterConfig.explicit(cluster.plane.server, client.config.token_file, cluster.ca_file)
    untrusting = KubeClient(config)
    try:
        with pytest.raises(KubernetesError) as caught:
            await untrusting.get_secret(CLIENT_NAMESPACE, "regcred")
    finally:
        await untrusting.close()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Kubernetes API at {cluster.plane.server}: ")
    assert "certificate verify failed" in message


# -- last: the Job the CronJob controller made ----------------------------------------------------


def test_the_cronjob_controller_runs_what_was_pinned(cluster: Cluster, nightly: Nightly) -> None:
    """Last in the module, so the CronJob made for the first test has had its seconds."""
    pinned = template_images(nightly.cronjob)
    cluster.push("team/nightly", "1.0")  # the tag moves after the CronJob was pinned
    jobs = api_path("batch/v1", "jobs", nightly.namespace)

    def scheduled() -> list[Json] | None:
        made = [
            j
            for j in cluster.kube.list(jobs)
            if "cronjob.kubernetes.io/instantiate" not in j["metadata"].get("annotations", {})
        ]
        return made or None

    (job,) = wait_until(scheduled, "the CronJob controller's first Job", timeout=30)
    assert owner(job) == "nightly"
    assert template_images(job) == pinned
    name = job["metadata"]["name"]
    (pod,) = wait_for_pods(cluster.kube, nightly.namespace, f"job-name={name}", 1)
    assert images(pod["spec"]) == pinned
