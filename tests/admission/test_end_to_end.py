"""The admission webhooks end to end, as real processes over HTTPS.

A certificate from ``moorage certs``; ``moorage serve --webhook-listen`` (2 workers) with it;
images pushed by skopeo; AdmissionReview requests POSTed over HTTPS (``http.client``, trusting
the CA) as the API server sends them; what was pinned read back with ``moorage pins``. Then
images of another registry (CNCF Distribution with htpasswd auth, over HTTPS with a CA of its
own) resolved with credentials from a Docker config file named in the configuration file, and
``moorage webhook serve`` (webhooks only) against the data directory of a ``moorage serve``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.admission.reviews import apply_patch, decoded_patch, pod_spec, review, workload
from tests.support.cli import moorage_cli, pins
from tests.support.clients import (
    Clients,
    Pki,
    RegistryHttp,
    make_pki,
)
from tests.support.distribution import basic_entry, docker_config, start_distribution
from tests.support.images import Image, open_layout, random_image
from tests.support.server import (
    RunningRegistry,
    free_port,
    start_moorage,
    stop_process,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.clients

USER, PASSWORD = "alice", f"pw-{os.urandom(6).hex()}"

SMALL = (4096, 8192)
MUTATE_PREFIX = "/spec/template/spec"


# -- certificates, webhooks, the CLI ---------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """What ``moorage certs`` wrote, and a --cert-dir for skopeo that trusts its CA."""

    ca: Path
    cert: Path
    key: Path
    cert_dir: Path

    @property
    def tls(self) -> tuple[Path, Path, Path]:
        return self.cert, self.key, self.ca


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    out = tmp_path_factory.mktemp("moorage-certs")
    moorage_cli("certs", "--out", str(out / "issued"), "--ip", "127.0.0.1")
    cert_dir = out / "cert-dir"
    cert_dir.mkdir()
    shutil.copyfile(out / "issued" / "ca.crt", cert_dir / "ca.crt")
    issued = out / "issued"
    return Certs(issued / "ca.crt", issued / "tls.crt", issued / "tls.key", cert_dir)


@dataclass
class Webhooks:
    """The webhooks' HTTPS endpoint, called as the API server calls it."""

    address: str
    ca: Path

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        host, port = self.address.rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, bytes]:
        host, port = self.address.rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def admit(self, path: str, body: bytes) -> dict[str, Any]:
        """The AdmissionReview ``response`` to ``body``, checked: 200, envelope, uid echoed."""
        status, document = self.post(path, body)
        assert status == 200, document
        assert document["apiVersion"] == "admission.k8s.io/v1"
        assert document["kind"] == "AdmissionReview"
        response: dict[str, Any] = document["response"]
        assert response["uid"] == json.loads(body)["request"]["uid"]
        return response

    def wait_healthy(self, process: subprocess.Popen[bytes], log: Path) -> None:
        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"moorage exited with {process.returncode}:\n{log.read_text()}")
            try:
                return self.get("/healthz") == (200, b"ok")
            except OSError:
                return False

        wait_until(
            healthy,
            lambda: f"the webhooks at {self.address} to answer:\n{log.read_text()}",
            timeout=20,
        )


def start_with_webhooks(
    workdir: Path, certs: Certs, *, workers: int = 2, args: tuple[str, ...] = ()
) -> tuple[RunningRegistry, Webhooks]:
    """``moorage serve --webhook-listen`` over HTTPS; the registry and its webhooks."""
    hooks = Webhooks(f"127.0.0.1:{free_port()}", certs.ca)
    registry = start_moorage(
        workdir,
        workers=workers,
        args=("--webhook-listen", hooks.address, *args),
        tls=certs.tls,
    )
    try:
        hooks.wait_healthy(registry.process, registry.log)
    except BaseException:
        registry.stop()
        raise
    return registry, hooks


def skopeo_push(clients: Clients, source: str, destination: str, *options: str) -> None:
    clients.skopeo("copy", "--retry-times", "0", *options, source, f"docker://{destination}")


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    with Clients(tmp_path / "clients") as made:
        yield made


# -- moorage serve --webhook-listen: this registry's images ----------------------------------------


def test_pins_follow_the_tag_and_keep_pinned_objects(
    tmp_path: Path, certs: Certs, clients: Clients
) -> None:
    registry, hooks = start_with_webhooks(tmp_path / "moorage", certs)
    try:
        layout = open_layout(tmp_path / "layout")
        first = layout.add(random_image(layer_sizes=SMALL), "first")
        second = layout.add(random_image(layer_sizes=SMALL), "second")
        image = f"{registry.address}/team/app:today"
        tls = ("--dest-cert-dir", str(certs.cert_dir))
        http = RegistryHttp(registry.url, ca_file=certs.ca)

        skopeo_push(clients, layout.ref("first"), image, *tls)
        assert http.manifest("team/app", "today").digest == first.digest

        deployment = workload("Deployment", pod_spec([image]))
        created = hooks.admit("/mutate", review(deployment))
        assert created["allowed"] is True
        patch = decoded_patch(created)
        assert patch == [
            {
                "op": "replace",
                "path": f"{MUTATE_PREFIX}/containers/0/image",
                "value": f"{image}@{first.digest}",
            }
        ]
        pinned = apply_patch(deployment, patch)

        # The tag moves: new objects get the new digest ...
        skopeo_push(clients, layout.ref("second"), image, *tls)
        assert http.manifest("team/app", "today").digest == second.digest
        pod = workload("Pod", pod_spec([image]), name="web-1")
        pod_answer = hooks.admit("/mutate", review(pod))
        assert decoded_patch(pod_answer) == [
            {
                "op": "replace",
                "path": "/spec/containers/0/image",
                "value": f"{image}@{second.digest}",
            }
        ]
        # ... while the Deployment pinned before, sent again (the webhook's reinvocation, or an
        # UPDATE), gets no patch: it keeps its digest.
        for operation in ("UPDATE", "CREATE"):
            again = hooks.admit("/mutate", review(pinned, operation=operation, old=pinned))
            assert set(again) == {"uid", "allowed"}, again
            assert again["allowed"] is True

        found = pins(registry, 2)
        by_kind = {p["kind"]: p for p in found}
        assert by_kind["Deployment"]["name"] == "web"
        assert by_kind["Deployment"]["digest"] == first.digest
        assert by_kind["Pod"]["name"] == "web-1"
        assert by_kind["Pod"]["digest"] == second.digest
        for pin in found:
            assert pin["namespace"] == "prod"
            assert pin["image"] == image
            assert pin["container"] == "c0"
            assert pin["source"] == "local"
            assert pin["user"] == "alice@example.com"
        assert pins(registry, 0, "--namespace", "dev") == []
        assert [p["kind"] for p in pins(registry, 2, image)] == ["Pod", "Deployment"]

        # The table: one line per pin, newest first, digests shortened.
        env = {"MOORAGE_REGISTRY": registry.url, "MOORAGE_CA_FILE": str(certs.ca)}
        lines = moorage_cli("pins", env=env).stdout.splitlines()
        assert lines[0].split() == [
            "TIME", "NAMESPACE", "OBJECT", "CONTAINER", "IMAGE", "DIGEST", "VIA"
        ]  # fmt: skip
        assert lines[1].split()[1:] == [
            "prod", "Pod/web-1", "c0", image, second.digest[:19], "local"
        ]  # fmt: skip
        assert lines[2].split()[1:] == [
            "prod", "Deployment/web", "c0", image, first.digest[:19], "local"
        ]  # fmt: skip
        assert len(lines) == 3

        # The webhooks speak HTTPS only: a plain HTTP request gets no answer.
        host, port = hooks.address.rsplit(":", 1)
        assert http_status(host, int(port), "/healthz") == 0
    finally:
        registry.stop()
    assert "Traceback" not in registry.logs()


def http_status(host: str, port: int, path: str) -> int:
    """The status a plain-HTTP request gets from an HTTPS port."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (http.client.HTTPException, OSError):
        return 0
    finally:
        conn.close()


# -- CNCF Distribution with htpasswd: another registry's images ------------------------------------


@dataclass
class Distribution:
    registry: RunningRegistry
    pki: Pki
    image: Image

    @property
    def reference(self) -> str:
        return f"{self.registry.address}/team/app:1.0"


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """Distribution on loopback (HTTPS, htpasswd) holding ``team/app:1.0``, pushed by skopeo."""
    workdir = tmp_path_factory.mktemp("distribution")
    pki = make_pki(workdir / "pki")
    registry = start_distribution(workdir, pki, {USER: PASSWORD})
    try:
        layout = open_layout(workdir / "layout")
        image = layout.add(random_image(layer_sizes=SMALL), "1.0")
        with Clients(workdir / "clients") as clients:
            skopeo_push(
                clients,
                layout.ref("1.0"),
                f"{registry.address}/team/app:1.0",
                "--dest-cert-dir",
                str(pki.cert_dir),
                "--dest-creds",
                f"{USER}:{PASSWORD}",
            )
        http = RegistryHttp(registry.url, ca_file=pki.ca_cert, auth=(USER, PASSWORD))
        assert http.manifest("team/app", "1.0").digest == image.digest
        yield Distribution(registry, pki, image)
    finally:
        registry.stop()


def admission_config(path: Path, *lines: str) -> Path:
    path.write_text("[admission]\n" + "".join(f"{line}\n" for line in lines))
    return path


def replace_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically, as Kubernetes updates a mounted Secret."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


def test_remote_images_with_credentials_from_a_docker_config(
    tmp_path: Path, certs: Certs, distribution: Distribution
) -> None:
    address = distribution.registry.address
    credentials = docker_config(tmp_path / "config.json", {address: basic_entry(USER, PASSWORD)})
    config = admission_config(
        tmp_path / "moorage.toml",
        f'docker_config = "{credentials}"',
        f'ca_file = "{distribution.pki.ca_cert}"',
        "cache_ttl = 0",  # every review asks Distribution
        'kubernetes = "off"',
    )
    registry, hooks = start_with_webhooks(
        tmp_path / "moorage", certs, args=("--config", str(config))
    )
    image = distribution.reference
    deployment = workload("Deployment", pod_spec(["busybox@sha256:" + "b" * 64, image]))
    try:
        answer = hooks.admit("/mutate", review(deployment))
        assert answer["allowed"] is True, answer
        assert decoded_patch(answer) == [
            {
                "op": "replace",
                "path": f"{MUTATE_PREFIX}/containers/1/image",
                "value": f"{image}@{distribution.image.digest}",
            }
        ]
        (pin,) = pins(registry, 1)
        assert (pin["image"], pin["container"]) == (image, "c1")
        assert (pin["digest"], pin["source"]) == (distribution.image.digest, "remote")

        # The credentials go away (the file is re-read when it changes): refused, saying why.
        replace_file(credentials, json.dumps({"auths": {}}))
        refused = hooks.admit("/mutate", review(deployment))
        assert refused["allowed"] is False
        assert refused["status"]["code"] == 403
        message = refused["status"]["message"]
        assert f'container "c1" (containers) image "{image}"' in message
        assert f"{image}: unauthorized: no credentials for {address}" in message
        assert "c0" not in message

        # Back again: pinned again.
        replace_file(credentials, json.dumps({"auths": {address: basic_entry(USER, PASSWORD)}}))
        assert hooks.admit("/mutate", review(deployment))["allowed"] is True
    finally:
        registry.stop()
    assert "Traceback" not in registry.logs()

    # With on_failure = "warn", the same refusal admits the object unpinned, with a warning.
    replace_file(credentials, json.dumps({"auths": {}}))
    warn = admission_config(
        tmp_path / "warn.toml",
        f'docker_config = "{credentials}"',
        f'ca_file = "{distribution.pki.ca_cert}"',
        'on_failure = "warn"',
        'kubernetes = "off"',
    )
    registry, hooks = start_with_webhooks(
        tmp_path / "moorage-warn", certs, workers=1, args=("--config", str(warn))
    )
    try:
        answer = hooks.admit("/mutate", review(deployment))
        assert set(answer) == {"uid", "allowed", "warnings"}, answer
        assert answer["allowed"] is True
        (warning,) = answer["warnings"]
        assert warning.startswith(f'not pinned: container "c1" (containers) image "{image}": ')
        assert "unauthorized" in warning
        assert pins(registry, 0) == []
    finally:
        registry.stop()


def test_wrong_password_is_refused(
    tmp_path: Path, certs: Certs, distribution: Distribution
) -> None:
    address = distribution.registry.address
    credentials = docker_config(tmp_path / "config.json", {address: basic_entry(USER, "wrong")})
    config = admission_config(
        tmp_path / "moorage.toml",
        f'docker_config = "{credentials}"',
        f'ca_file = "{distribution.pki.ca_cert}"',
        'kubernetes = "off"',
    )
    registry, hooks = start_with_webhooks(
        tmp_path / "moorage", certs, workers=1, args=("--config", str(config))
    )
    try:
        answer = hooks.admit("/mutate", review(workload("Pod", pod_spec([distribution.reference]))))
        assert answer["allowed"] is False
        assert (
            f"unauthorized: {address} refused the credentials from docker config {credentials}"
            in answer["status"]["message"]
        )
    finally:
        registry.stop()


# -- moorage webhook serve: webhooks only, on a registry's data directory --------------------------


@dataclass
class WebhookOnly:
    process: subprocess.Popen[bytes]
    hooks: Webhooks
    log: Path

    def stop(self) -> None:
        stop_process(self.process)


def start_webhook_only(
    workdir: Path, certs: Certs, data: Path, listen: str, env: dict[str, str]
) -> WebhookOnly:
    workdir.mkdir(parents=True, exist_ok=True)
    hooks = Webhooks(f"127.0.0.1:{free_port()}", certs.ca)
    log = workdir / "webhook.log"
    command = [
        sys.executable, "-m", "moorage", "webhook", "serve",
        "--listen", listen,
        "--data", str(data),
        "--workers", "1",
        "--webhook-listen", hooks.address,
        "--tls-cert", str(certs.cert),
        "--tls-key", str(certs.key),
    ]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**clean, **env}
        )
    running = WebhookOnly(process, hooks, log)
    try:
        hooks.wait_healthy(process, log)
    except BaseException:
        running.stop()
        raise
    return running


def test_webhook_serve_resolves_the_registry_it_shares_data_with(
    tmp_path: Path, certs: Certs, clients: Clients
) -> None:
    registry = start_moorage(tmp_path / "registry", workers=1)  # plain HTTP
    try:
        layout = open_layout(tmp_path / "layout")
        first = layout.add(random_image(layer_sizes=SMALL), "first")
        second = layout.add(random_image(layer_sizes=SMALL), "second")
        image = f"{registry.address}/team/web:main"
        skopeo_push(clients, layout.ref("first"), image, "--dest-tls-verify=false")

        # Its own --listen is not served (no registry API); the registry's address is one of
        # "this registry's" hosts through admission.registry_hosts.
        unused = f"127.0.0.1:{free_port()}"
        webhook = start_webhook_only(
            tmp_path / "webhook",
            certs,
            registry.data,
            unused,
            {"MOORAGE_ADMISSION_REGISTRY_HOSTS": registry.address, "MOORAGE_ADMISSION_REMOTE": "0"},
        )
        try:
            hooks = webhook.hooks
            assert hooks.get("/v2/")[0] == 404
            host, port = unused.rsplit(":", 1)
            with pytest.raises(ConnectionRefusedError):
                http.client.HTTPConnection(host, int(port), timeout=5).connect()

            statefulset = workload("StatefulSet", pod_spec([image]))
            answer = hooks.admit("/mutate", review(statefulset))
            assert decoded_patch(answer) == [
                {
                    "op": "replace",
                    "path": f"{MUTATE_PREFIX}/containers/0/image",
                    "value": f"{image}@{first.digest}",
                }
            ]
            # A push to the registry is seen at once: local tags are read, never cached.
            skopeo_push(clients, layout.ref("second"), image, "--dest-tls-verify=false")
            job = workload("Job", pod_spec([image]), name="migrate")
            answer = hooks.admit("/mutate", review(job))
            assert decoded_patch(answer)[0]["value"] == f"{image}@{second.digest}"
            # Other registries are not resolved (admission.remote off): refused, saying so.
            other = hooks.admit("/mutate", review(workload("Pod", pod_spec(["nginx:1.25"]))))
            assert "resolving other registries is turned off" in other["status"]["message"]
        finally:
            webhook.stop()
        assert webhook.process.returncode == 0, webhook.log.read_text()
        assert "Traceback" not in webhook.log.read_text()

        # What the webhook-only process pinned, the registry lists: one metadata store.
        found = pins(registry, 2)
        assert [(p["kind"], p["digest"], p["source"]) for p in found] == [
            ("Job", second.digest, "local"),
            ("StatefulSet", first.digest, "local"),
        ]
    finally:
        registry.stop()


VERSIONS_POLICY = """
[policy]
default = "mutable"

[[policy.rules]]
name = "versions"
tags = ['regex:v?[0-9]+(\\.[0-9]+)+']
mode = "immutable"
"""


@pytest.mark.parametrize(
    "policy",
    ["", VERSIONS_POLICY],
    ids=["default-policy", "versions-immutable-here"],
)
def test_a_tag_moved_in_another_registry_is_seen_after_the_cache_ttl(
    tmp_path: Path, certs: Certs, distribution: Distribution, clients: Clients, policy: str
) -> None:
    address = distribution.registry.address
    layout = open_layout(tmp_path / "layout")
    first = layout.add(random_image(layer_sizes=SMALL), "first")
    second = layout.add(random_image(layer_sizes=SMALL), "second")
    image = f"{address}/team/moving-{os.urandom(3).hex()}:1.0"
    push = ("--dest-cert-dir", str(distribution.pki.cert_dir), "--dest-creds", f"{USER}:{PASSWORD}")
    skopeo_push(clients, layout.ref("first"), image, *push)
    credentials = docker_config(tmp_path / "config.json", {address: basic_entry(USER, PASSWORD)})
    config = admission_config(
        tmp_path / "moorage.toml",
        f'docker_config = "{credentials}"',
        f'ca_file = "{distribution.pki.ca_cert}"',
        "cache_ttl = 0",
        'kubernetes = "off"',
    )
    config.write_text(config.read_text() + policy)
    registry, hooks = start_with_webhooks(
        tmp_path / "moorage", certs, workers=1, args=("--config", str(config))
    )
    try:
        body = review(workload("Pod", pod_spec([image])))
        assert decoded_patch(hooks.admit("/mutate", body))[0]["value"].endswith(f"@{first.digest}")
        skopeo_push(clients, layout.ref("second"), image, *push)
        body = review(workload("Pod", pod_spec([image])))
        assert decoded_patch(hooks.admit("/mutate", body))[0]["value"] == (
            f"{image}@{second.digest}"
        )
    finally:
        registry.stop()
