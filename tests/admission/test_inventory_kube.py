"""The cluster inventory read from a real kube-apiserver, with what RBAC gives the webhooks.

The package's control plane (``conftest.py``: etcd, kube-apiserver, kube-controller-manager; no
kubelet, so Pods stay Pending, but the controllers make ReplicaSets, Pods, ControllerRevisions).
The objects are created as the API takes them, and the controllers make theirs: a Deployment
(its ReplicaSet and Pods), a StatefulSet whose template moved on (two ControllerRevisions,
its Pod still at the first), a DaemonSet (a ControllerRevision; no node runs it), a Job (its
Pod), a suspended CronJob, a ReplicationController, a PodTemplate, and bare Pods: one with
init and ephemeral containers and a status written through ``pods/status`` as a kubelet writes
it, and one in another namespace with an image that does not parse. Their images are of
this registry (two host names; nothing serves them: no webhook runs here) and of others.

The inventory is read with a token of a ServiceAccount bound to exactly the ClusterRole that
``moorage webhook manifests`` prints; then with that role's ``list`` on controllerrevisions
taken away.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moorage.admission.inventory import InventoryResource, list_running_images, take_inventory
from moorage.admission.kube import ClusterConfig, KubeClient, KubernetesError
from moorage.digest import Digest
from moorage.meta.sqlite import SQLiteMetadata
from moorage.model import Actor, ManifestRecord, Reference, RunningImage
from moorage.registry.layout import blob_key
from moorage.registry.service import Registry
from moorage.registry.settings import CollectionSettings
from moorage.storage.memory import MemoryDriver
from tests.support.cli import moorage_cli
from tests.support.images import seeded_image
from tests.support.kube import ControlPlane, Json, Kube, StartingControlPlane, api_path
from tests.support.kube_objects import (
    container,
    cronjob,
    deployment,
    pod_object,
    pod_spec,
    workload,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.clients

ACCOUNT_NAMESPACE, ACCOUNT = "inventory-system", "inventory"
ACCOUNT_USER = f"system:serviceaccount:{ACCOUNT_NAMESPACE}:{ACCOUNT}"
APPS, OTHERS = "inventory-apps", "inventory-others"
#: This registry's names.
OWN, ALIAS = "moorage.inventory.test:5000", "registry.inventory.test"
HOSTS = frozenset({OWN, ALIAS})
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@dataclass
class Setup:
    plane: ControlPlane
    kube: Kube
    #: The ServiceAccount's token.
    token: str
    #: The printed ClusterRole.
    role: Json
    #: What the inventory must list.
    expected: set[RunningImage]


def record(
    kind: str,
    name: str,
    container: str,
    image: str,
    repository: str,
    tag: str | None,
    d: str | None = None,
    namespace: str = APPS,
) -> RunningImage:
    return RunningImage(namespace, kind, name, container, image, repository, tag, d)


def names(kube: Kube, api_version: str, resource: str, namespace: str, selector: str) -> list[str]:
    return sorted(
        o["metadata"]["name"]
        for o in kube.list(api_path(api_version, resource, namespace), selector)
    )


def create_objects(kube: Kube) -> set[RunningImage]:
    """The objects of every kind; the records the inventory must find for them, once the
    controllers have made theirs."""
    for namespace in (APPS, OTHERS):
        kube.create_namespace(namespace)
    apps = APPS

    web = deployment("web", f"{OWN}/team/web:1.0", replicas=2)
    web["spec"]["template"]["spec"]["containers"].append(container("proxy", "docker.io/envoy:1"))
    kube.create(api_path("apps/v1", "deployments", apps), web)

    db = workload(
        "StatefulSet",
        "db",
        pod_spec(
            [container("db", f"{OWN}/team/db:2.0")],
            init=[container("setup", f"{ALIAS}/team/tools@{D1}")],
        ),
        replicas=1,
        serviceName="db",
        updateStrategy={"type": "OnDelete"},  # its Pod stays at the first revision
    )
    kube.create(api_path("apps/v1", "statefulsets", apps), db)
    agent = pod_spec([container("agent", f"{OWN}/team/agent:3"), container("x", "quay.io/x:1")])
    kube.create(api_path("apps/v1", "daemonsets", apps), workload("DaemonSet", "agent", agent))
    migrate = pod_spec([container("migrate", f"{OWN}/team/migrate:1")], restartPolicy="Never")
    kube.create(api_path("batch/v1", "jobs", apps), workload("Job", "migrate", migrate))
    nightly = cronjob("nightly", pod_spec([container("report", f"{ALIAS}/team/report")]))
    nightly["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    nightly["spec"]["suspend"] = True
    kube.create(api_path("batch/v1", "cronjobs", apps), nightly)
    legacy = pod_spec([container("legacy", f"{OWN}/team/legacy:0.9")])
    kube.create(
        api_path("v1", "replicationcontrollers", apps),
        {
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "legacy"},
            "spec": {
                "replicas": 1,
                "selector": {"app": "legacy"},
                "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": legacy},
            },
        },
    )
    kube.create(
        api_path("v1", "podtemplates", apps),
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "base"},
            "template": {"spec": pod_spec([container("base", f"{OWN}/team/base:1")])},
        },
    )

    # A bare Pod: init containers, an ephemeral one (kubectl debug), and its status.
    shell = pod_object(
        "shell",
        [container("app", f"{OWN}/team/shell:1.0"), container("tool", "ghcr.io/other/tool:1")],
        init=[container("setup", f"{OWN}/team/tools:1.0")],
    )
    kube.create(api_path("v1", "pods", apps), shell)
    kube.patch(
        api_path("v1", "pods", apps, "shell", "ephemeralcontainers"),
        {
            "spec": {
                "ephemeralContainers": [
                    {"name": "debugger", "image": f"{ALIAS}/team/debug:1", "resources": {}}
                ]
            }
        },
    )
    running = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    kube.patch(
        api_path("v1", "pods", apps, "shell", "status"),
        {
            "status": {
                "initContainerStatuses": [
                    {
                        "name": "setup",
                        "image": f"{OWN}/team/tools:1.0",
                        "imageID": f"docker-pullable://{OWN}/team/tools@{D2}",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "app",
                        "image": f"{OWN}/team/shell:1.0",
                        "imageID": f"{OWN}/team/shell@{D3}",
                        "ready": True,
                        "restartCount": 0,
                        "state": running,
                    },
                    {
                        "name": "tool",
                        "image": "ghcr.io/other/tool:1",
                        "imageID": f"ghcr.io/other/tool@{D1}",
                        "ready": True,
                        "restartCount": 0,
                        "state": running,
                    },
                ],
                "ephemeralContainerStatuses": [
                    {
                        "name": "debugger",
                        "image": f"{ALIAS}/team/debug:1",
                        # A runtime that keeps no repository digest: the config's digest.
                        "imageID": f"docker://{D1}",
                        "ready": False,
                        "restartCount": 0,
                        "state": running,
                    }
                ],
            }
        },
        "merge",
    )
    # Another namespace; an image that does not parse beside one that does.
    odd = pod_object(
        "odd", [container("bad", f"{OWN}/Team/App:1"), container("good", f"{ALIAS}/b:1")]
    )
    kube.create(api_path("v1", "pods", OTHERS), odd)

    # What the controllers make.
    def made(resource: str, selector: str, count: int, api: str = "apps/v1") -> list[str]:
        found: list[str] = []

        def there() -> bool:
            nonlocal found
            found = names(kube, api, resource, apps, selector)
            return len(found) == count

        wait_until(there, lambda: f"{count} {resource} {selector} (found {found})", timeout=30)
        return found

    (web_rs,) = made("replicasets", "app=web", 1)
    web_pods = made("pods", "app=web", 2, "v1")
    (db_pod,) = made("pods", "app=db", 1, "v1")
    made("controllerrevisions", "app=db", 1)
    # The StatefulSet's template moves on; its Pod keeps running the first (OnDelete).
    moved = [{"name": "db", "image": f"{OWN}/team/db:2.1"}]
    kube.patch(
        api_path("apps/v1", "statefulsets", apps, "db"),
        {"spec": {"template": {"spec": {"containers": moved}}}},
    )
    db_first, db_second = sorted(
        made("controllerrevisions", "app=db", 2),
        key=lambda n: kube.get(api_path("apps/v1", "controllerrevisions", apps, n))["revision"],
    )
    (agent_revision,) = made("controllerrevisions", "app=agent", 1)
    (migrate_pod,) = made("pods", "app=migrate", 1, "v1")
    (legacy_pod,) = made("pods", "app=legacy", 1, "v1")

    web_image = ("web", f"{OWN}/team/web:1.0", "team/web", "1.0")
    db_setup = ("setup", f"{ALIAS}/team/tools@{D1}", "team/tools", None)
    db_first_image = ("db", f"{OWN}/team/db:2.0", "team/db", "2.0")
    db_second_image = ("db", f"{OWN}/team/db:2.1", "team/db", "2.1")
    agent_image = ("agent", f"{OWN}/team/agent:3", "team/agent", "3")
    migrate_image = ("migrate", f"{OWN}/team/migrate:1", "team/migrate", "1")
    legacy_image = ("legacy", f"{OWN}/team/legacy:0.9", "team/legacy", "0.9")
    return {
        record("Deployment", "web", *web_image),
        record("ReplicaSet", web_rs, *web_image),
        *(record("Pod", pod, *web_image) for pod in web_pods),
        record("StatefulSet", "db", *db_setup, d=D1),
        record("StatefulSet", "db", *db_second_image),
        record("ControllerRevision", db_first, *db_setup, d=D1),
        record("ControllerRevision", db_first, *db_first_image),
        record("ControllerRevision", db_second, *db_setup, d=D1),
        record("ControllerRevision", db_second, *db_second_image),
        record("Pod", db_pod, *db_setup, d=D1),
        record("Pod", db_pod, *db_first_image),
        record("DaemonSet", "agent", *agent_image),
        record("ControllerRevision", agent_revision, *agent_image),
        record("Job", "migrate", *migrate_image),
        record("Pod", migrate_pod, *migrate_image),
        record("CronJob", "nightly", "report", f"{ALIAS}/team/report", "team/report", "latest"),
        record("ReplicationController", "legacy", *legacy_image),
        record("Pod", legacy_pod, *legacy_image),
        record("PodTemplate", "base", "base", f"{OWN}/team/base:1", "team/base", "1"),
        # The bare Pod: its spec, then its status.
        record("Pod", "shell", "setup", f"{OWN}/team/tools:1.0", "team/tools", "1.0"),
        record("Pod", "shell", "app", f"{OWN}/team/shell:1.0", "team/shell", "1.0"),
        record("Pod", "shell", "debugger", f"{ALIAS}/team/debug:1", "team/debug", "1"),
        record(
            "Pod",
            "shell",
            "setup",
            f"docker-pullable://{OWN}/team/tools@{D2}",
            "team/tools",
            None,
            d=D2,
        ),
        record("Pod", "shell", "app", f"{OWN}/team/shell@{D3}", "team/shell", None, d=D3),
        record("Pod", "odd", "good", f"{ALIAS}/b:1", "b", "1", namespace=OTHERS),
    }


def may_list(kube: Kube, group: str, resource: str) -> bool:
    """Whether the ServiceAccount may list ``resource`` in all namespaces now."""
    review = kube.create(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": ACCOUNT_USER,
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {"verb": "list", "group": group, "resource": resource},
            },
        },
    )
    return bool(review["status"].get("allowed"))


@pytest.fixture(scope="module")
def setup(
    kube_control_plane: StartingControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    # While the control plane starts: what moorage prints (its RBAC only: no webhooks here).
    ca_file = tmp_path_factory.mktemp("inventory") / "ca.crt"
    ca_file.write_text("not used\n")
    printed = moorage_cli(
        "webhook", "manifests", "--ca-file", str(ca_file),
        "--namespace", ACCOUNT_NAMESPACE, "--service-account", ACCOUNT,
    ).stdout  # fmt: skip
    rbac = [i for i in json.loads(printed)["items"] if i["kind"].startswith("ClusterRole")]
    plane = kube_control_plane.wait()
    kube = plane.admin()
    kube.create_namespace(ACCOUNT_NAMESPACE, wait_for_service_account=False)
    kube.create(
        api_path("v1", "serviceaccounts", ACCOUNT_NAMESPACE),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}},
    )
    for item in rbac:
        kube.create_object(item)
    (role,) = [i for i in rbac if i["kind"] == "ClusterRole"]
    token = kube.service_account_token(ACCOUNT_NAMESPACE, ACCOUNT)
    return Setup(plane, kube, token, role, create_objects(kube))


@pytest.fixture
async def client(setup: Setup, tmp_path: Path) -> AsyncIterator[KubeClient]:
    """A client as moorage makes it: the API server, the ServiceAccount's token, its CA."""
    token_file = tmp_path / "token"
    token_file.write_text(setup.token)
    made = KubeClient(ClusterConfig.explicit(setup.plane.server, token_file, setup.plane.ca_file))
    yield made
    await made.close()


async def test_the_inventory_of_every_kind(setup: Setup, client: KubeClient) -> None:
    found = await list_running_images(client, HOSTS)
    assert len(found) == len(set(found))
    assert set(found) == setup.expected
    # Templates before what is made from them.
    kinds = list(dict.fromkeys(r.kind for r in found))
    assert kinds.index("Deployment") < kinds.index("ReplicaSet") < kinds.index("Pod")
    assert kinds.index("StatefulSet") < kinds.index("ControllerRevision") < kinds.index("Pod")
    # One name of this registry alone.
    only_alias = await list_running_images(client, frozenset({ALIAS}))
    assert set(only_alias) == {r for r in setup.expected if r.image.startswith(ALIAS)}


async def test_the_inventory_is_recorded_for_garbage_collection(
    setup: Setup, client: KubeClient, tmp_path: Path
) -> None:
    """What the webhooks' first worker does every ``admission.inventory_interval``: list,
    then replace the registry's inventory, dated when the listing started."""
    registry = Registry(MemoryDriver(), SQLiteMetadata(tmp_path / "meta.db"))
    try:
        before = time.time()
        found = await take_inventory(client, HOSTS, registry.inventory.replace)
        taken, recorded = await registry.inventory.current()
        assert set(recorded) == set(found) == setup.expected
        assert taken is not None and before <= taken <= time.time()
    finally:
        await registry.close()


async def test_small_pages_list_the_same(setup: Setup, client: KubeClient) -> None:
    requests: list[str] = []
    send = client._request

    async def counted(path: str, *, refresh: bool) -> tuple[int, Json | None]:
        requests.append(path)
        return await send(path, refresh=refresh)

    client._request = counted  # type: ignore[method-assign]
    whole = await list_running_images(client, HOSTS)
    assert len(requests) == 10  # one request per resource
    requests.clear()
    assert await list_running_images(client, HOSTS, page_size=2) == whole
    pods = [r for r in requests if r.startswith("/api/v1/pods?")]
    assert len(pods) >= 4  # seven Pods here, and those of the package's other modules
    assert all("continue=" in r for r in pods[1:])
    # Page by page, the API server's list, item for item.
    path = api_path("v1", "pods", APPS)
    listed = [o["metadata"]["name"] async for o in client.list_objects(path, page_size=2)]
    assert listed == [p["metadata"]["name"] for p in setup.kube.list(path)]
    assert len(listed) == 6


async def test_a_resource_the_api_server_does_not_serve_is_skipped(
    setup: Setup, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """batch/v1beta1 CronJobs are gone since Kubernetes 1.25; RBAC lets the role list them
    (rules name groups, not versions), so the answer is a 404."""
    gone = InventoryResource("CronJob", "batch", "v1beta1", "cronjobs")
    pods = InventoryResource("Pod", "", "v1", "pods")
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        found = await list_running_images(client, HOSTS, resources=(gone, pods))
    assert set(found) == {r for r in setup.expected if r.kind == "Pod"}
    assert (
        f"the Kubernetes API at {setup.plane.server} does not serve cronjobs (API group batch); "
        "not listed"
    ) in caplog.text


async def test_without_list_on_a_resource_the_error_names_the_rule(
    setup: Setup, client: KubeClient
) -> None:
    kube, role = setup.kube, setup.role
    path = kube.object_path(role)
    fewer = [
        {**rule, "resources": [r for r in rule["resources"] if r != "controllerrevisions"]}
        for rule in role["rules"]
    ]
    kube.patch(path, {"rules": fewer}, "merge")
    try:
        wait_until(
            lambda: not may_list(kube, "apps", "controllerrevisions"),
            "RBAC to take list on controllerrevisions away",
            timeout=30,
        )
        with pytest.raises(KubernetesError) as caught:
            await list_running_images(client, HOSTS)
    finally:
        kube.patch(path, {"rules": role["rules"]}, "merge")  # as printed
    assert str(caught.value) == (
        "the webhook may not list controllerrevisions (API group apps) in all namespaces "
        '(controllerrevisions.apps is forbidden: User "system:serviceaccount:inventory-system:'
        'inventory" cannot list resource "controllerrevisions" in API group "apps" at the '
        "cluster scope): give the webhook's ServiceAccount list on controllerrevisions (a "
        "ClusterRole with apiGroups [apps], resources [controllerrevisions], verbs [list], and "
        "a ClusterRoleBinding to it, as `moorage webhook manifests` prints them)"
    )
    wait_until(
        lambda: may_list(kube, "apps", "controllerrevisions"),
        "RBAC to give list on controllerrevisions back",
        timeout=30,
    )
    assert set(await list_running_images(client, HOSTS)) == setup.expected


async def test_garbage_collection_keeps_what_the_cluster_runs(
    setup: Setup, client: KubeClient, tmp_path: Path
) -> None:
    """From the API server to the collector: an untagged image that only a Pod runs, old
    enough to go, is kept, with the Pod as the reason; its twin that nothing runs goes."""
    settings = CollectionSettings(
        grace=0, untagged_after=0, history_window=0, pins_window=0, inventory_max_age=0
    )
    registry = Registry(
        MemoryDriver(), SQLiteMetadata(tmp_path / "meta.db"), collection=settings, hosts=HOSTS
    )
    running, idle = seeded_image("gc-running"), seeded_image("gc-idle")
    for image in (running, idle):
        for blob in image.all_blobs:
            await registry.storage.put(blob_key(Digest.parse(blob.digest)), blob.data)
            await registry.meta.add_blob("gc/app", blob.digest, blob.size)
        references = tuple(Reference("blob", blob.digest) for blob in image.all_blobs)
        record = ManifestRecord(
            image.digest, image.media_type, image.manifest, references=references
        )
        await registry.meta.put_manifest("gc/app", record, (), Actor(None, "test", "gc"))
    pods = api_path("v1", "pods", APPS)
    runner = pod_object("gc-runner", [container("app", f"{OWN}/gc/app@{running.digest}")])
    setup.kube.create(pods, runner)
    try:
        await take_inventory(client, HOSTS, registry.inventory.replace)
        report = await registry.collector().run()
    finally:
        setup.kube.delete(api_path("v1", "pods", APPS, "gc-runner"))
        await registry.close()
    assert [m.digest for s in report.repositories for m in s.manifests] == [idle.digest]
    kept = {m.digest: why for s in report.repositories for m, why in s.kept_manifests}
    assert kept == {running.digest: (f"running in {APPS}/Pod/gc-runner",)}
