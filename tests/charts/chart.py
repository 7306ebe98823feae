"""The Helm chart (``charts/moorage``) as the tests drive it: helm, rendered objects, hook Jobs.

- ``Helm`` runs the real helm (``tests/support/programs.py``: it must be installed) with its
  cache, configuration and registry login under the test's directory, and a kubeconfig for
  the test's API server as its admin.
- Rendered manifests are YAML, and the tests have no YAML parser: ``documents`` splits helm's
  output into its documents (helm writes ``---`` between them, and none of the chart's
  block scalars holds a line starting with ``---``), ``Manifest.head`` reads the few top-level
  fields that say where an object goes, and the API server itself turns each document into
  JSON (``Manifest.dry_run``: a server-side dry run of the YAML, validated strictly).
- ``HookJobs`` stands in for the kubelet the test control plane lacks, for the chart's hook
  Jobs only: once the Job controller has made a Job's Pod (so Pod Security admitted it), it
  runs the Pod's container as a local ``moorage`` process, with its arguments, its environment
  (``secretKeyRef`` values read from their Secrets), and, when the Pod mounts a
  ServiceAccount token, a token of that ServiceAccount (TokenRequest) with the API server's
  address, so the command has exactly the rights the chart gives the Job. Then it records the
  Job complete through the status subresource, as the Job controller does when its Pod
  succeeds, and helm, which waits for its hook Jobs, carries on.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.support.clients import Clients
from tests.support.kube import ApiError, ControlPlane, Json, Kube, api_path
from tests.support.programs import REPO_ROOT, program
from tests.support.waiting import wait_until

CHART = REPO_ROOT / "charts" / "moorage"
CHART_VERSION = "0.1.0"
#: The example values of each profile (what ``helm lint`` and the tests install).
PROFILES = {
    "embedded": CHART / "ci" / "embedded-values.yaml",
    "scale-out": CHART / "ci" / "scale-out-values.yaml",
    "webhook-only": CHART / "ci" / "webhook-only-values.yaml",
    "containerd-hosts": CHART / "ci" / "containerd-hosts-values.yaml",
}
HOOK = "helm.sh/hook"


# -- rendered documents --------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """Where an object goes: its apiVersion, kind, name and namespace (None: not written)."""

    api_version: str
    kind: str
    name: str
    namespace: str | None


def _top(text: str, key: str) -> str | None:
    found = re.search(rf"^{key}: *(.+?) *$", text, re.MULTILINE)
    return found.group(1).strip("\"'") if found else None


def _metadata(text: str, key: str) -> str | None:
    block = re.search(r"^metadata:\n((?:  .*\n|\s*\n)*)", text + "\n", re.MULTILINE)
    if block is None:
        return None
    found = re.search(rf"^  {key}: *(.+?) *$", block.group(1), re.MULTILINE)
    return found.group(1).strip("\"'") if found else None


@dataclass(frozen=True)
class Manifest:
    """One rendered document: its YAML, and where it goes."""

    text: str

    @property
    def head(self) -> Head:
        api_version, kind = _top(self.text, "apiVersion"), _top(self.text, "kind")
        name = _metadata(self.text, "name")
        assert api_version and kind and name, f"no apiVersion, kind or name in:\n{self.text}"
        return Head(api_version, kind, name, _metadata(self.text, "namespace"))

    @property
    def source(self) -> str:
        found = re.search(r"^# Source: (.+)$", self.text, re.MULTILINE)
        return found.group(1) if found else "?"

    def dry_run(self, kube: Kube, namespace: str) -> Json:
        """The object as the API server would store it (server-side dry run, unknown or
        duplicate fields refused), created in ``namespace`` unless it names its own."""
        head = self.head
        resource, namespaced = kube.resource(head.api_version, head.kind)
        where = (head.namespace or namespace) if namespaced else None
        path = api_path(head.api_version, resource, where)
        return post_yaml(kube, path, self.text, dryRun="All", fieldValidation="Strict")


def documents(text: str) -> list[Manifest]:
    """The documents of helm's output, without empty ones."""
    parts = re.split(r"^---[ \t]*$", text, flags=re.MULTILINE)
    return [Manifest(part.strip("\n") + "\n") for part in parts if _top(part, "kind")]


def post_yaml(kube: Kube, path: str, text: str, **query: str) -> Json:
    """POST a YAML document (as ``kubectl create -f`` could send it); the JSON answer."""
    parts = urlsplit(kube.server)
    context = ssl.create_default_context(cafile=str(kube.ca_file))
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port, context=context, timeout=kube.timeout
    )
    target = path + (f"?{urlencode(query)}" if query else "")
    headers = {
        "Authorization": f"Bearer {kube.token}",
        "Accept": "application/json",
        "Content-Type": "application/yaml",
    }
    try:
        connection.request("POST", target, body=text.encode(), headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    document = json.loads(raw) if raw else {}
    if response.status >= 400:
        raise ApiError("POST", target, response.status, document)
    assert isinstance(document, dict)
    return document


def find(objects: Sequence[Json], kind: str, name: str | None = None) -> Json:
    """The one object of ``kind`` (and ``name``) among ``objects``."""
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[k(o) for o in objects]}"
    return found[0]


def k(obj: Mapping[str, Any]) -> str:
    """``Kind/name``, for messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_specs(obj: Mapping[str, Any]) -> Json | None:
    """The pod spec of a workload (with its template's metadata), or None."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        template: Json = spec["template"]
        return template
    return None


# -- helm ------------------------------------------------------------------------------------------


def write_kubeconfig(path: Path, plane: ControlPlane) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": plane.server,
                            "certificate-authority": str(plane.ca_file),
                        },
                    }
                ],
                "users": [{"name": "admin", "user": {"token": plane.admin_token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                "current-context": "test",
            }
        )
    )
    path.chmod(0o600)
    return path


@dataclass
class Helm:
    """helm with the state of ``clients`` (cache, config, registry login) and, given a control
    plane, a kubeconfig for its admin."""

    clients: Clients
    kubeconfig: Path | None = None
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = dict(self.clients.env)
        if self.kubeconfig is not None:
            self.env["KUBECONFIG"] = str(self.kubeconfig)

    def command(self, *args: str | Path) -> list[str]:
        return [program("helm"), *map(str, args)]

    def __call__(
        self, *args: str | Path, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check:
            assert result.returncode == 0, (
                f"helm {' '.join(map(str, args))} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, *args: str | Path) -> subprocess.Popen[str]:
        """helm in the background (an install or upgrade whose hooks a test runs)."""
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def template(self, *args: str | Path) -> list[Manifest]:
        return documents(self("template", *args).stdout)


# -- hook Jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookRun:
    """A hook Job run locally: its name, hooks, arguments and output."""

    job: str
    hooks: str
    args: tuple[str, ...]
    output: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class HookJobs:
    """Runs the hook Jobs of a release in ``namespace`` while helm waits for them."""

    plane: ControlPlane
    namespace: str
    workdir: Path
    runs: list[HookRun] = field(default_factory=list)

    @property
    def kube(self) -> Kube:
        return self.plane.admin()

    def drive(self, helm: subprocess.Popen[str], timeout: float = 120) -> str:
        """Run each hook Job of the namespace as it appears, until helm exits; helm's output
        (AssertionError if it failed, or if a hook did)."""
        done: set[str] = set()
        deadline = time.monotonic() + timeout
        try:
            while helm.poll() is None:
                assert time.monotonic() < deadline, f"helm still running after {timeout:g} s"
                jobs = self.kube.list(api_path("batch/v1", "jobs", self.namespace))
                for job in jobs:
                    uid = job["metadata"]["uid"]
                    if uid in done or HOOK not in job["metadata"].get("annotations", {}):
                        continue
                    done.add(uid)
                    if not _finished(job):
                        self.runs.append(self.run(job))
                time.sleep(0.1)
        finally:
            if helm.poll() is None:
                helm.kill()
            out, err = helm.communicate()
        assert helm.returncode == 0, f"helm exited with {helm.returncode}:\n{out}\n{err}"
        return out + err

    def run(self, job: Json) -> HookRun:
        name = job["metadata"]["name"]
        self._wait_for_pod(job)
        spec = job["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        scratch = self.workdir / f"{name}-{job['metadata']['uid'][:8]}"
        scratch.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
        env.update(self._environment(container.get("env", [])))
        if spec.get("automountServiceAccountToken", True):
            account = spec.get("serviceAccountName", "default")
            env.update(self._credentials(account, scratch / "token"))
        args = tuple(container.get("args", []))
        result = subprocess.run(
            [sys.executable, "-m", "moorage", *args],
            env={**env, "TMPDIR": str(scratch)},
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"hook Job {name}: moorage {' '.join(args)}:\n{output}"
        self._complete(job)
        return HookRun(name, job["metadata"]["annotations"][HOOK], args, output)

    def _wait_for_pod(self, job: Json) -> None:
        """Until the Job controller has made the Job's Pod: Pod Security admitted it."""
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        pods = api_path("v1", "pods", self.namespace)

        def made() -> bool:
            return any(
                ref.get("uid") == uid
                for pod in self.kube.list(pods, f"batch.kubernetes.io/job-name={name}")
                for ref in pod["metadata"].get("ownerReferences", [])
            )

        def events() -> str:
            listed = self.kube.list(api_path("v1", "events", self.namespace))
            about = [e for e in listed if e["involvedObject"].get("uid") == uid]
            return f"a Pod of hook Job {name}; its events: " + "; ".join(
                f"{e['reason']}: {e['message']}" for e in about
            )

        wait_until(made, events, timeout=20)

    def _environment(self, entries: list[Json]) -> dict[str, str]:
        values: dict[str, str] = {}
        for entry in entries:
            if "value" in entry:
                values[entry["name"]] = entry["value"]
                continue
            ref = entry["valueFrom"]["secretKeyRef"]
            secret = self.kube.get(api_path("v1", "secrets", self.namespace, ref["name"]))
            values[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return values

    def _credentials(self, account: str, token: Path) -> dict[str, str]:
        """What a Pod of ``account`` reaches the API server with: a token of its own."""
        token.write_text(self.kube.service_account_token(self.namespace, account, 600))
        return {
            "MOORAGE_ADMISSION_KUBERNETES_API": self.plane.server,
            "MOORAGE_ADMISSION_KUBERNETES_TOKEN_FILE": str(token),
            "MOORAGE_ADMISSION_KUBERNETES_CA_FILE": str(self.plane.ca_file),
        }

    def _complete(self, job: Json) -> None:
        """What the Job controller records when the Job's one Pod has succeeded."""
        path = api_path("batch/v1", "jobs", self.namespace, job["metadata"]["name"])
        now = _now()
        condition = {"status": "True", "lastTransitionTime": now, "lastProbeTime": now}
        status = {
            "active": 0,
            "ready": 0,
            "terminating": 0,
            "succeeded": 1,
            "completionTime": now,
            "conditions": [
                {"type": "SuccessCriteriaMet", "reason": "CompletionsReached", **condition},
                {"type": "Complete", "reason": "CompletionsReached", **condition},
            ],
        }
        wait_until(
            lambda: self.kube.get(path)["status"].get("startTime"),
            f"the Job controller to start {job['metadata']['name']}",
        )
        self.kube.patch(path + "/status", {"status": status}, kind="merge")


def _finished(job: Json) -> bool:
    conditions = job.get("status", {}).get("conditions", [])
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
