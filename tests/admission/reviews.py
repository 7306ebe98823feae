"""AdmissionReview v1 requests shaped as the API server sends them, for the admission tests."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Sequence
from typing import Any

GROUPS = {
    "Pod": ("", "pods"),
    "PodTemplate": ("", "podtemplates"),
    "ReplicationController": ("", "replicationcontrollers"),
    "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
}


def pod_spec(
    containers: Sequence[str],
    init: Sequence[str] = (),
    ephemeral: Sequence[str] = (),
    pull_secrets: Sequence[str] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": f"c{i}", "image": image, "resources": {}, "imagePullPolicy": "IfNotPresent"}
            for i, image in enumerate(containers)
        ],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
    }
    if init:
        # The second init container is a native sidecar (restartPolicy: Always).
        spec["initContainers"] = [
            {"name": f"init{i}", "image": image, **({"restartPolicy": "Always"} if i else {})}
            for i, image in enumerate(init)
        ]
    if ephemeral:
        spec["ephemeralContainers"] = [
            {"name": f"debug{i}", "image": image, "targetContainerName": "c0"}
            for i, image in enumerate(ephemeral)
        ]
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    return spec


def workload(kind: str, spec: dict[str, Any], name: str | None = "web") -> dict[str, Any]:
    group, _ = GROUPS[kind]
    metadata: dict[str, Any] = {"namespace": "prod", "labels": {"app": "web"}}
    if name is None:
        metadata["generateName"] = "web-"
    else:
        metadata["name"] = name
    obj: dict[str, Any] = {
        "apiVersion": f"{group}/v1" if group else "v1",
        "kind": kind,
        "metadata": metadata,
    }
    template = {"metadata": {"labels": {"app": "web"}}, "spec": spec}
    if kind == "Pod":
        obj["spec"] = spec
    elif kind == "PodTemplate":
        obj["template"] = template
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        obj["spec"] = {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template,
        }
    return obj


def review(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    sub_resource: str | None = None,
    dry_run: bool = False,
    old: dict[str, Any] | None = None,
) -> bytes:
    kind = obj["kind"]
    group, resource = GROUPS[kind]
    version = "v1"
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "namespace": "prod",
        "operation": operation,
        "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if "name" in obj["metadata"]:
        request["name"] = obj["metadata"]["name"]  # absent for generateName objects
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def apply_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply the replace operations a webhook returned, as the API server would."""
    result = copy.deepcopy(obj)
    for operation in patch:
        assert operation["op"] == "replace", operation
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in operation["path"].split("/")[1:]]
        target: Any = result
        for token in tokens[:-1]:
            target = target[int(token)] if isinstance(target, list) else target[token]
        last = tokens[-1]
        if isinstance(target, list):
            target[int(last)] = operation["value"]
        else:
            assert last in target, operation
            target[last] = operation["value"]
    return result


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch of a webhook's AdmissionReview response."""
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    return patch
