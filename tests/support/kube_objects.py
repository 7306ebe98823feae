"""Kubernetes objects as kubectl makes them, for the tests against a real kube-apiserver
(``tests/admission/test_kube_apiserver.py``, ``test_inventory_kube.py``), and waiting for the
Pods the controllers make."""

from __future__ import annotations

from typing import Any

from tests.support.kube import Json, Kube, api_path
from tests.support.waiting import wait_until


def container(name: str, image: str, **fields: Any) -> Json:
    return {"name": name, "image": image, "resources": {}, **fields}


def pod_spec(containers: list[Json], init: list[Json] | None = None, **fields: Any) -> Json:
    spec: Json = {"containers": containers, **fields}
    if init:
        spec["initContainers"] = init
    return spec


def pod_object(name: str, containers: list[Json], **spec: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"run": name}},
        "spec": pod_spec(containers, **spec),
    }


def deployment(name: str, image: str, replicas: int = 1) -> Json:
    """What ``kubectl create deployment NAME --image=IMAGE --replicas=N`` sends."""
    labels = {"app": name}
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container(name, image)]},
            },
            "strategy": {},
        },
        "status": {},
    }


def workload(kind: str, name: str, spec: Json, **extra: Any) -> Json:
    """A StatefulSet, DaemonSet or Job running ``spec``."""
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": spec}
    body: Json = {"template": template, **extra}
    if kind != "Job":
        body["selector"] = {"matchLabels": labels}
    api = "batch/v1" if kind == "Job" else "apps/v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": body}


def cronjob(name: str, spec: Json, schedule: str = "0 3 * * *") -> Json:
    """What ``kubectl create cronjob NAME --image=... --schedule=...`` sends."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"metadata": {"name": name}, "spec": {"template": {"spec": spec}}},
        },
    }


def wait_for_pods(kube: Kube, namespace: str, selector: str, count: int) -> list[Json]:
    """The Pods matching ``selector``, once there are ``count`` of them."""
    path = api_path("v1", "pods", namespace)

    def listed() -> list[Json] | None:
        found = kube.list(path, selector)
        return found if len(found) == count else None

    return wait_until(listed, f"{count} Pod(s) {selector} in {namespace}", timeout=30)
