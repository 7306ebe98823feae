"""moorage.admission.inventory: the images of this registry each kind of object uses, the
hosts that count, container statuses' imageIDs, one record each; and how
``KubeClient.list_objects`` pages, with answers a real API server gives rarely (an expired
continue token) or only to a client it refuses. ``test_inventory_kube.py`` reads a real
cluster."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from moorage.admission.inventory import (
    INVENTORY_RESOURCES,
    images_of,
    list_running_images,
    status_reference,
)
from moorage.admission.kube import ClusterConfig, KubeClient, KubernetesError
from moorage.model import RunningImage

Json = dict[str, Any]

OWN = "moorage.test:5000"
OTHER_NAME = "moorage.internal"
HOSTS = frozenset({OWN, OTHER_NAME})
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def container(name: str, image: str) -> Json:
    return {"name": name, "image": image}


def spec(*containers: Json, init: tuple[Json, ...] = (), ephemeral: tuple[Json, ...] = ()) -> Json:
    made: Json = {"containers": list(containers)}
    if init:
        made["initContainers"] = list(init)
    if ephemeral:
        made["ephemeralContainers"] = list(ephemeral)
    return made


def meta(name: str, namespace: str = "prod") -> Json:
    return {"name": name, "namespace": namespace, "uid": "u-" + name}


def record(
    kind: str,
    name: str,
    container: str,
    image: str,
    repository: str,
    tag: str | None,
    digest: str | None = None,
    namespace: str = "prod",
) -> RunningImage:
    return RunningImage(namespace, kind, name, container, image, repository, tag, digest)


# -- one object of each kind -----------------------------------------------------------------------


def test_a_pod_its_containers_of_every_kind_and_its_status() -> None:
    pod = {
        "metadata": meta("web-1"),
        "spec": spec(
            container("app", f"{OWN}/team/app:1.0"),
            container("proxy", "docker.io/library/envoy:1"),
            init=(container("setup", f"{OWN}/team/tools@{D1}"),),
            ephemeral=(container("debugger", f"{OTHER_NAME}/debug"),),
        ),
        "status": {
            "phase": "Running",
            "initContainerStatuses": [
                {"name": "setup", "image": f"{OWN}/team/tools@{D1}", "imageID": ""}
            ],
            "containerStatuses": [
                {
                    "name": "app",
                    "image": f"{OWN}/team/app:1.0",
                    "imageID": f"docker-pullable://{OWN}/team/app@{D2}",
                },
                {
                    "name": "proxy",
                    "image": "docker.io/library/envoy:1",
                    "imageID": f"docker.io/library/envoy@{D1}",
                },
            ],
            "ephemeralContainerStatuses": [
                {
                    "name": "debugger",
                    "image": f"{OTHER_NAME}/debug:latest",
                    "imageID": f"{OTHER_NAME}/debug@{D1}",
                }
            ],
        },
    }
    assert images_of("Pod", pod, HOSTS) == [
        record("Pod", "web-1", "setup", f"{OWN}/team/tools@{D1}", "team/tools", None, D1),
        record("Pod", "web-1", "app", f"{OWN}/team/app:1.0", "team/app", "1.0"),
        # No tag: the kubelet pulls latest.
        record("Pod", "web-1", "debugger", f"{OTHER_NAME}/debug", "debug", "latest"),
        # The status: what the node runs. The same image again is the same record.
        record(
            "Pod", "web-1", "app", f"docker-pullable://{OWN}/team/app@{D2}", "team/app", None, D2
        ),
        record("Pod", "web-1", "debugger", f"{OTHER_NAME}/debug:latest", "debug", "latest"),
        record("Pod", "web-1", "debugger", f"{OTHER_NAME}/debug@{D1}", "debug", None, D1),
    ]


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        ("Deployment", lambda s: {"spec": {"replicas": 2, "template": {"spec": s}}}),
        ("ReplicaSet", lambda s: {"spec": {"template": {"spec": s}}}),
        ("StatefulSet", lambda s: {"spec": {"serviceName": "db", "template": {"spec": s}}}),
        ("DaemonSet", lambda s: {"spec": {"template": {"spec": s}}}),
        ("ReplicationController", lambda s: {"spec": {"template": {"spec": s}}}),
        ("Job", lambda s: {"spec": {"template": {"spec": s}}}),
        ("CronJob", lambda s: {"spec": {"jobTemplate": {"spec": {"template": {"spec": s}}}}}),
        ("PodTemplate", lambda s: {"template": {"spec": s}}),
        # A StatefulSet's or DaemonSet's revision: a patch of its spec.
        (
            "ControllerRevision",
            lambda s: {"data": {"spec": {"template": {"$patch": "replace", "spec": s}}}},
        ),
    ],
)
def test_templates_of_every_kind(kind: str, shape: Any) -> None:
    obj = {
        "metadata": meta("x", "team-a"),
        **shape(
            spec(
                container("app", f"{OWN}/team/app:2.0@{D1}"),
                container("hub", "nginx"),
                init=(container("setup", f"{OWN}/team/tools:1"),),
            )
        ),
    }
    assert images_of(kind, obj, HOSTS) == [
        record(kind, "x", "setup", f"{OWN}/team/tools:1", "team/tools", "1", None, "team-a"),
        record(kind, "x", "app", f"{OWN}/team/app:2.0@{D1}", "team/app", "2.0", D1, "team-a"),
    ]


def test_only_pods_have_a_status_that_counts() -> None:
    status = {"containerStatuses": [{"name": "a", "image": f"{OWN}/a:1", "imageID": ""}]}
    assert images_of("Deployment", {"metadata": meta("d"), "status": status}, HOSTS) == []


def test_objects_without_images() -> None:
    assert images_of("Pod", {}, HOSTS) == []
    assert images_of("Service", {"metadata": meta("s"), "spec": spec()}, HOSTS) == []
    # Revisions of other controllers keep other data.
    revision = {"metadata": meta("r"), "data": {"vm": {"image": f"{OWN}/vm:1"}}, "revision": 1}
    assert images_of("ControllerRevision", revision, HOSTS) == []
    assert images_of("ControllerRevision", {"metadata": meta("r"), "data": "raw"}, HOSTS) == []
    odd = {"metadata": meta("p"), "spec": {"containers": "no"}, "status": {"containerStatuses": 1}}
    assert images_of("Pod", odd, HOSTS) == []


# -- which hosts count -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        (f"{OWN}/team/app:1", "team/app"),
        (f"{OTHER_NAME}/app:1", "app"),
        (f"{OWN}/a/b/c:1", "a/b/c"),
        ("moorage.test/team/app:1", None),  # another port is another registry
        ("moorage.test:5001/team/app:1", None),
        ("docker.io/team/app:1", None),
        ("team/app:1", None),  # docker.io
        ("ghcr.io/moorage.test:5000/app:1", None),
    ],
)
def test_only_this_registrys_hosts_count(image: str, repository: str | None) -> None:
    pod = {"metadata": meta("p"), "spec": spec(container("c", image))}
    found = images_of("Pod", pod, HOSTS)
    assert [r.repository for r in found] == ([] if repository is None else [repository])


def test_images_that_do_not_parse_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    pod = {
        "metadata": meta("p"),
        "spec": spec(
            container("upper", f"{OWN}/Team/App:1"),
            container("spaces", f" {OWN}/app:1"),
            container("tag", f"{OWN}/app:!"),
            container("digest", f"{OWN}/app@sha256:short"),
            container("fine", f"{OWN}/app:1"),
        ),
        "status": {"containerStatuses": [{"name": "bad", "image": "", "imageID": "docker://"}]},
    }
    with caplog.at_level(logging.DEBUG, logger="moorage.admission.inventory"):
        found = images_of("Pod", pod, HOSTS)
    assert [r.container for r in found] == ["fine"]
    assert f"Pod prod/p container 'upper': invalid image reference '{OWN}/Team/App:1'" in (
        caplog.text
    )
    assert "Pod prod/p container 'digest': invalid image reference" in caplog.text


# -- container statuses' image IDs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reference"),
    [
        (f"docker-pullable://{OWN}/app@{D1}", f"{OWN}/app@{D1}"),
        (f"{OWN}/app@{D1}", f"{OWN}/app@{D1}"),
        (f"containerd://{OWN}/app@{D1}", f"{OWN}/app@{D1}"),
        (f"docker://{OWN}/app:1", f"{OWN}/app:1"),
        (f"{OWN}/app:1", f"{OWN}/app:1"),
        # Bare image ids (a config's digest) name no repository.
        (D1, None),
        (f"docker://{D1}", None),
    ],
)
def test_status_references(value: str, reference: str | None) -> None:
    assert status_reference(value) == reference


def test_bare_image_ids_are_not_read_as_docker_hub_images() -> None:
    pod = {
        "metadata": meta("p"),
        "spec": spec(),
        "status": {"containerStatuses": [{"name": "c", "image": D2, "imageID": f"docker://{D1}"}]},
    }
    assert images_of("Pod", pod, frozenset({"docker.io"})) == []


# -- the whole inventory ---------------------------------------------------------------------------


class Lister:
    """Serves ``objects`` per API path, as ``KubeClient.list_objects`` would; records calls."""

    def __init__(self, objects: dict[str, list[Json]]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, int | None]] = []

    async def list_objects(self, api_path: str, *, page_size: int = 500) -> AsyncIterator[Json]:
        self.calls.append((api_path, page_size))
        for obj in self.objects.get(api_path, []):
            yield obj


async def test_every_resource_is_listed_templates_first_each_record_once() -> None:
    pod = {"metadata": meta("web-1"), "spec": spec(container("app", f"{OWN}/app:1"))}
    template = {"metadata": meta("web"), "spec": {"template": {"spec": pod["spec"]}}}
    lister = Lister(
        {
            "/api/v1/pods": [pod, pod],  # seen twice (a list continued from a newer snapshot)
            "/apis/apps/v1/deployments": [template],
            "/apis/batch/v1/jobs": [{"metadata": meta("other"), "spec": {}}],
        }
    )
    found = await list_running_images(lister, HOSTS, page_size=7)
    assert found == [
        record("Deployment", "web", "app", f"{OWN}/app:1", "app", "1"),
        record("Pod", "web-1", "app", f"{OWN}/app:1", "app", "1"),
    ]
    assert lister.calls == [
        ("/apis/batch/v1/cronjobs", 7),
        ("/apis/apps/v1/deployments", 7),
        ("/apis/apps/v1/statefulsets", 7),
        ("/apis/apps/v1/daemonsets", 7),
        ("/api/v1/replicationcontrollers", 7),
        ("/api/v1/podtemplates", 7),
        ("/apis/batch/v1/jobs", 7),
        ("/apis/apps/v1/replicasets", 7),
        ("/apis/apps/v1/controllerrevisions", 7),
        ("/api/v1/pods", 7),
    ]
    assert [r.api_path for r in INVENTORY_RESOURCES] == [path for path, _ in lister.calls]
    # The client's own page size, unless one is given.
    lister.calls.clear()
    await list_running_images(lister, HOSTS)
    assert {size for _, size in lister.calls} == {500}


# -- KubeClient.list_objects, against answers given in turn ----------------------------------------


class Answers:
    """Stands in for ``KubeClient._request``: the answers in turn, and the requests."""

    def __init__(self, *answers: tuple[int, Json | None]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, dict[str, list[str]], bool]] = []

    async def __call__(self, path: str, *, refresh: bool) -> tuple[int, Json | None]:
        parts = urlsplit(path)
        self.requests.append((parts.path, parse_qs(parts.query), refresh))
        return self.answers.pop(0)


def page(*names: str, token: str = "") -> tuple[int, Json]:
    return 200, {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "7", **({"continue": token} if token else {})},
        "items": [{"metadata": {"name": n}} for n in names],
    }


def status(code: int, reason: str, message: str, token: str = "") -> tuple[int, Json]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"continue": token} if token else {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@pytest.fixture
def client(tmp_path: Path) -> KubeClient:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return KubeClient(ClusterConfig("https://kube.test:6443", token, None))


async def listed(client: KubeClient, answers: Answers, path: str, **kwargs: Any) -> list[str]:
    client._request = answers  # type: ignore[method-assign]
    return [o["metadata"]["name"] async for o in client.list_objects(path, **kwargs)]


async def test_list_objects_pages_with_limit_and_continue(client: KubeClient) -> None:
    answers = Answers(page("a", "b", token="c1"), page("c", "d", token="c2=/+"), page("e"))
    assert await listed(client, answers, "/api/v1/pods", page_size=2) == list("abcde")
    assert answers.requests == [
        ("/api/v1/pods", {"limit": ["2"]}, False),
        ("/api/v1/pods", {"limit": ["2"], "continue": ["c1"]}, False),
        ("/api/v1/pods", {"limit": ["2"], "continue": ["c2=/+"]}, False),
    ]
    answers = Answers(page())
    assert await listed(client, answers, "/apis/apps/v1/replicasets") == []
    assert answers.requests == [("/apis/apps/v1/replicasets", {"limit": ["500"]}, False)]
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        await listed(client, Answers(), "/api/v1/pods", page_size=0)


async def test_list_objects_reads_a_rotated_token_after_a_401(client: KubeClient) -> None:
    answers = Answers(status(401, "Unauthorized", "Unauthorized"), page("a"))
    assert await listed(client, answers, "/api/v1/pods") == ["a"]
    assert [refresh for _, _, refresh in answers.requests] == [False, True]
    answers = Answers(*[status(401, "Unauthorized", "Unauthorized")] * 2)
    with pytest.raises(KubernetesError) as caught:
        await listed(client, answers, "/api/v1/pods")
    assert str(caught.value) == (
        "the Kubernetes API at https://kube.test:6443 refused the webhook's ServiceAccount "
        f"token from {client.config.token_file} (Unauthorized): is it expired, revoked, or "
        "another cluster's?"
    )


async def test_list_objects_of_a_resource_not_served(
    client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    answers = Answers(status(404, "NotFound", "the server could not find the requested resource"))
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        assert await listed(client, answers, "/apis/apps/v1/controllerrevisions") == []
    assert (
        "the Kubernetes API at https://kube.test:6443 does not serve controllerrevisions "
        "(API group apps); not listed"
    ) in caplog.text


async def test_list_objects_refused_says_which_rbac_rule_is_missing(client: KubeClient) -> None:
    forbidden = (
        'controllerrevisions.apps is forbidden: User "system:serviceaccount:moorage:moorage" '
        'cannot list resource "controllerrevisions" in API group "apps" at the cluster scope'
    )
    answers = Answers(status(403, "Forbidden", forbidden))
    with pytest.raises(KubernetesError) as caught:
        await listed(client, answers, "/apis/apps/v1/controllerrevisions")
    assert str(caught.value) == (
        "the webhook may not list controllerrevisions (API group apps) in all namespaces "
        f"({forbidden}): give the webhook's ServiceAccount list on controllerrevisions (a "
        "ClusterRole with apiGroups [apps], resources [controllerrevisions], verbs [list], and "
        "a ClusterRoleBinding to it, as `moorage webhook manifests` prints them)"
    )
    answers = Answers(status(403, "Forbidden", "no"))
    with pytest.raises(KubernetesError) as caught:
        await listed(client, answers, "/api/v1/namespaces/team-a/pods")
    assert str(caught.value).startswith(
        "the webhook may not list pods in namespace team-a (no): give the webhook's "
        'ServiceAccount list on pods (a ClusterRole with apiGroups [""], resources [pods], '
    )


async def test_list_objects_continues_past_an_expired_token(
    client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    expired = "The provided continue parameter is too old to display a consistent list result."
    answers = Answers(
        page("a", token="old"), status(410, "Expired", expired, token="newer"), page("b")
    )
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        assert await listed(client, answers, "/api/v1/pods", page_size=1) == ["a", "b"]
    assert [query.get("continue") for _, query, _ in answers.requests] == [
        None,
        ["old"],
        ["newer"],
    ]
    assert "listing pods in all namespaces took longer than the API server keeps" in caplog.text
    # Without a token to continue with, the list cannot be finished.
    answers = Answers(page("a", token="old"), status(410, "Expired", expired))
    with pytest.raises(KubernetesError) as caught:
        await listed(client, answers, "/api/v1/pods")
    assert str(caught.value) == (
        "the Kubernetes API at https://kube.test:6443 answered 410 for the list of pods in all "
        f"namespaces: {expired}"
    )


async def test_list_objects_other_failures(client: KubeClient) -> None:
    with pytest.raises(KubernetesError) as caught:
        await listed(client, Answers((500, None)), "/apis/batch/v1/cronjobs")
    assert str(caught.value) == (
        "the Kubernetes API at https://kube.test:6443 answered 500 for the list of cronjobs "
        "(API group batch) in all namespaces: HTTP 500"
    )
    # A 404 after the first page is not "not served".
    answers = Answers(page("a", token="t"), status(404, "NotFound", "gone"))
    with pytest.raises(KubernetesError, match="answered 404 for the list of pods"):
        await listed(client, answers, "/api/v1/pods")
