"""A local Kubernetes control plane for tests, and a small typed client of its API.

``start_control_plane`` runs ``../shared/tools/kube/up`` (etcd, kube-apiserver and
kube-controller-manager on loopback, no kubelet: Pods stay Pending; see its README) in the
background, so a test module can prepare other servers meanwhile; ``wait()`` returns the
``ControlPlane`` once it answers, and ``stop()`` runs ``down STATE --purge``.

``Kube`` speaks to the API server over HTTPS with a bearer token, sending the requests kubectl
sends (the same paths, patch content types and subresources), so tests drive the API server as
users do without the kubectl binary: ``create``, ``get``, ``find``, ``patch``, ``list``,
``delete``; ``create_object`` finds where any object goes (as ``kubectl create -f`` does,
through the API's discovery documents).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tests.support.programs import outside_tool, program
from tests.support.waiting import wait_until

Json = dict[str, Any]

#: The programs ``up`` runs besides the binaries it brings.
UP_NEEDS = ("xz", "curl", "openssl")

PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


# -- the control plane -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlPlane:
    """What ``up`` printed: its state directory, the API server's URL, CA and admin token."""

    state: Path
    server: str
    ca_file: Path
    admin_token_file: Path

    @property
    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    def admin(self) -> Kube:
        return Kube(self.server, self.admin_token, self.ca_file)


@dataclass
class StartingControlPlane:
    """``up`` running in the background, its state in ``state``."""

    up: Path
    state: Path
    process: subprocess.Popen[str]
    _ready: ControlPlane | None = None

    def wait(self, timeout: float = 180) -> ControlPlane:
        """The control plane, once ``up`` has printed it (``up`` waits until it answers)."""
        if self._ready is not None:
            return self._ready
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()  # its exit trap stops what it started
            out, err = self.process.communicate()
            raise RuntimeError(f"{self.up} did not finish in {timeout:g} s:\n{err}") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"{self.up} failed with {self.process.returncode}:\n{err}")
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self._ready = ControlPlane(
            Path(values["STATE"]),
            values["APISERVER"],
            Path(values["CA_FILE"]),
            Path(values["ADMIN_TOKEN_FILE"]),
        )
        return self._ready

    def stop(self) -> None:
        """Stop what ``up`` started (by the PIDs it recorded) and delete its state."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.communicate()
        if self.state.exists():
            subprocess.run(
                [str(self.up.parent / "down"), str(self.state), "--purge"],
                check=True,
                capture_output=True,
                timeout=60,
            )


def start_control_plane(state: Path) -> StartingControlPlane:
    """Start ``../shared/tools/kube/up`` with its state in ``state`` (which it creates);
    skips the test when the tools are absent (fails under CI=true)."""
    up = outside_tool("kube/up")
    for name in UP_NEEDS:
        program(name)  # a missing one fails here, saying how to install it
    process = subprocess.Popen(
        [str(up), str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return StartingControlPlane(up, state, process)


# -- the API ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """The API server refused a request: its status code, reason and message."""

    def __init__(self, method: str, path: str, status: int, document: Json | None) -> None:
        self.status = status
        document = document or {}
        self.reason = str(document.get("reason", ""))
        self.message = str(document.get("message", ""))
        self.document = document
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


def api_path(
    api_version: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/api/v1/...`` for the core group, ``/apis/GROUP/VERSION/...`` for the others."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{resource}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


@dataclass
class Kube:
    """Requests to one API server as one user (a bearer token)."""

    server: str
    token: str
    ca_file: Path
    timeout: float = 30.0
    _resources: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    _tls: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tls = ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Json:
        """The JSON answer to one request; ``ApiError`` for a status of 400 or more."""
        target = path + (f"?{urlencode(query)}" if query else "")
        parts = urlsplit(self.server)
        assert parts.hostname is not None and parts.port is not None
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=self._tls, timeout=self.timeout
        )
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {"message": raw.decode(errors="replace")}
        if response.status >= 400:
            raise ApiError(method, target, response.status, document)
        assert isinstance(document, dict), document
        return document

    def create(self, path: str, obj: Json, **query: str) -> Json:
        """POST ``obj`` to the collection ``path`` (``dryRun="All"`` for a server-side dry run)."""
        return self.request("POST", path, obj, query=query)

    def get(self, path: str) -> Json:
        return self.request("GET", path)

    def find(self, path: str) -> Json | None:
        """The object at ``path``, or None when there is none."""
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, path: str, patch: Any, kind: str = "strategic", **query: str) -> Json:
        """PATCH ``path``: ``kind`` is strategic (kubectl's default), merge or json."""
        return self.request("PATCH", path, patch, content_type=PATCH_TYPES[kind], query=query)

    def list(self, path: str, label_selector: str | None = None) -> list[Json]:
        query = {"labelSelector": label_selector} if label_selector else None
        items = self.request("GET", path, query=query)["items"]
        assert isinstance(items, list)
        return items

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """The resource (plural name) serving ``kind``, and whether it is namespaced, from the
        API's discovery document, as kubectl finds it."""
        key = (api_version, kind)
        if key not in self._resources:
            listed = self.get("/api/v1" if api_version == "v1" else f"/apis/{api_version}")
            for entry in listed["resources"]:
                if "/" not in entry["name"]:
                    found = (entry["name"], bool(entry["namespaced"]))
                    self._resources[(api_version, entry["kind"])] = found
        if key not in self._resources:
            raise KeyError(f"the API server serves no {kind} in {api_version}")
        return self._resources[key]

    def object_path(self, obj: Mapping[str, Any], *, collection: bool = False) -> str:
        """Where ``obj`` lives (or, with ``collection``, where it is created)."""
        resource, namespaced = self.resource(obj["apiVersion"], obj["kind"])
        metadata = obj["metadata"]
        namespace = metadata.get("namespace", "default") if namespaced else None
        name = None if collection else metadata["name"]
        return api_path(obj["apiVersion"], resource, namespace, name)

    def create_object(self, obj: Json) -> Json:
        """Create any object where its apiVersion and kind say it goes."""
        return self.create(self.object_path(obj, collection=True), obj)

    # -- what the tests use often --

    def create_namespace(self, name: str, *, wait_for_service_account: bool = True) -> None:
        """A namespace; by default once its ``default`` ServiceAccount exists (the controller
        makes it; Pods cannot be created before)."""
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self.create("/api/v1/namespaces", namespace)
        if wait_for_service_account:
            account = api_path("v1", "serviceaccounts", name, "default")
            wait_until(
                lambda: self.find(account), f"the default ServiceAccount of {name}", timeout=30
            )

    def service_account_token(
        self, namespace: str, name: str, seconds: int = 3600, audience: str | None = None
    ) -> str:
        """A token for the ServiceAccount (TokenRequest, as ``kubectl create token`` asks)."""
        spec: Json = {"expirationSeconds": seconds}
        if audience is not None:
            spec["audiences"] = [audience]
        answer = self.create(
            api_path("v1", "serviceaccounts", namespace, name, "token"),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        token = answer["status"]["token"]
        assert isinstance(token, str)
        return token

    def can(
        self, user: str, groups: Sequence[str], verb: str, resource: str, namespace: str
    ) -> bool:
        """Whether ``user`` may ``verb`` ``resource`` in ``namespace`` now (SubjectAccessReview)."""
        review = self.create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": list(groups),
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": verb,
                        "resource": resource,
                    },
                },
            },
        )
        return bool(review["status"].get("allowed"))


def docker_config_secret(namespace: str, name: str, auths: Mapping[str, tuple[str, str]]) -> Json:
    """A ``kubernetes.io/dockerconfigjson`` Secret with a user and password per registry, as
    ``kubectl create secret docker-registry`` makes it."""
    config = {
        "auths": {
            host: {
                "username": user,
                "password": password,
                "auth": base64.b64encode(f"{user}:{password}".encode()).decode(),
            }
            for host, (user, password) in auths.items()
        }
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
