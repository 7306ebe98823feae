"""moorage.admission.kube: reading pull secrets through the Kubernetes API.

The API server is an aiohttp server over HTTPS (a CA made by the openssl CLI) that answers
with responses recorded from a real API server (``recorded/``: Secrets, ServiceAccounts and
``Status`` objects) and checks the ServiceAccount token it is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from moorage.admission.credentials import BasicAuth
from moorage.admission.kube import (
    ClusterConfig,
    KubeClient,
    KubernetesError,
    Secret,
    credentials_from_secret,
    in_cluster,
)
from moorage.admission.resolver import ResolveContext
from tests.support.clients import Pki, make_pki

RECORDED = Path(__file__).parent / "recorded"
NS = "/api/v1/namespaces"
ROUTES = {
    f"{NS}/team-a/secrets/regcred": "secret-team-a-regcred.json",
    f"{NS}/team-a/secrets/legacy": "secret-team-a-legacy.json",
    f"{NS}/team-a/secrets/hub": "secret-team-a-hub.json",
    f"{NS}/team-a/secrets/app-settings": "secret-team-a-app-settings.json",
    f"{NS}/team-a/secrets/broken": "secret-team-a-broken.json",
    f"{NS}/team-a/secrets/missing": "status-404-secret-missing.json",
    f"{NS}/team-a/serviceaccounts/default": "serviceaccount-team-a-default.json",
    f"{NS}/team-a/serviceaccounts/builder": "serviceaccount-team-a-builder.json",
    f"{NS}/team-a/serviceaccounts/ghost": "status-404-serviceaccount-ghost.json",
    f"{NS}/locked/secrets/regcred": "status-403-secret-locked.json",
    f"{NS}/locked/serviceaccounts/default": "status-403-serviceaccount-locked.json",
}

AiohttpServer = Callable[..., Any]


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return loaded


@dataclass
class FakeApiServer:
    """Serves ``ROUTES``; only ``Bearer <token>`` gets in (else the recorded 401)."""

    token: str
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.requests.append((request.path, authorization, request.headers.get("Accept", "")))
        if self.delay:
            await asyncio.sleep(self.delay)
        if authorization != f"Bearer {self.token}":
            return web.json_response(recorded("status-401.json"), status=401)
        name = ROUTES.get(request.path)
        if name is None:
            return web.json_response({"unexpected": request.path}, status=500)
        document = recorded(name)
        status = document["code"] if document["kind"] == "Status" else 200
        return web.json_response(document, status=status)

    @property
    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    api: FakeApiServer
    config: ClusterConfig
    clock: Clock
    client: KubeClient


@pytest.fixture
async def cluster(
    aiohttp_server: AiohttpServer, pki: Pki, tmp_path: Path
) -> AsyncIterator[Cluster]:
    api = FakeApiServer(token="token-" + os.urandom(8).hex())
    app = web.Application()
    app.router.add_get("/{path:.*}", api.handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = await aiohttp_server(app, ssl=context)
    token_file = tmp_path / "token"
    token_file.write_text(api.token + "\n")
    config = ClusterConfig(f"https://127.0.0.1:{server.port}", token_file, pki.ca_cert)
    clock = Clock()
    client = KubeClient(config, clock=clock)
    yield Cluster(api, config, clock, client)
    await client.close()


async def test_get_secret(cluster: Cluster) -> None:
    secret = await cluster.client.get_secret("team-a", "regcred")
    assert secret is not None
    assert (secret.namespace, secret.name, secret.type) == (
        "team-a",
        "regcred",
        "kubernetes.io/dockerconfigjson",
    )
    assert (
        json.loads(secret.data[".dockerconfigjson"])["auths"]["registry.example.com"]["username"]
        == "team-a"
    )
    [(path, authorization, accept)] = cluster.api.requests
    assert path == "/api/v1/namespaces/team-a/secrets/regcred"
    assert authorization == f"Bearer {cluster.api.token}"
    assert accept == "application/json"


async def test_get_service_account(cluster: Cluster) -> None:
    account = await cluster.client.get_service_account("team-a", "builder")
    assert account is not None
    assert account.image_pull_secrets == ("hub", "regcred")
    assert cluster.api.paths == ["/api/v1/namespaces/team-a/serviceaccounts/builder"]


async def test_missing_objects_are_none(cluster: Cluster) -> None:
    assert await cluster.client.get_secret("team-a", "missing") is None
    assert await cluster.client.get_service_account("team-a", "ghost") is None


async def test_pull_secrets_of_the_workload(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    context = ResolveContext("team-a", ("regcred", "missing", "app-settings", "broken"), "builder")
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        found = await cluster.client.pull_secret_credentials(context)
    assert [c.source for c in found] == ["pull secret team-a/regcred"]
    assert found[0].for_host("registry.example.com") == BasicAuth("team-a", "s3cret-a")
    # The workload names its secrets: the service account's are not asked for (as in Pods,
    # where the ServiceAccount admission plugin adds them only to a Pod that names none).
    assert sorted(cluster.api.paths) == sorted(
        f"{NS}/team-a/secrets/{name}" for name in ("regcred", "missing", "app-settings", "broken")
    )
    assert "imagePullSecret team-a/missing not found; skipped" in caplog.text
    assert "pull secret team-a/broken: not valid JSON" in caplog.text


async def test_pull_secrets_of_the_default_service_account(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        found = await cluster.client.pull_secret_credentials(ResolveContext("team-a"))
    assert cluster.api.paths[0] == f"{NS}/team-a/serviceaccounts/default"
    [legacy] = found
    assert legacy.source == "pull secret team-a/legacy"
    assert legacy.for_host("legacy.example.com") == BasicAuth("old", "0ld-pass")
    assert "imagePullSecret team-a/missing not found" in caplog.text


async def test_pull_secrets_of_a_named_service_account(cluster: Cluster) -> None:
    found = await cluster.client.pull_secret_credentials(ResolveContext("team-a", (), "builder"))
    assert [c.source for c in found] == ["pull secret team-a/hub", "pull secret team-a/regcred"]
    assert found[0].for_host("docker.io", "library/nginx") == BasicAuth("teama", "hub-token")


async def test_missing_service_account_gives_no_credentials(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        assert (
            await cluster.client.pull_secret_credentials(ResolveContext("team-a", (), "ghost"))
            == []
        )
    assert "service account team-a/ghost not found" in caplog.text
    assert await cluster.client.pull_secret_credentials(ResolveContext("")) == []


async def test_forbidden_names_the_rbac_needed(cluster: Cluster) -> None:
    with pytest.raises(KubernetesError) as caught:
        await cluster.client.pull_secret_credentials(ResolveContext("locked", ("regcred",)))
    message = str(caught.value)
    assert message.startswith("the webhook may not read secrets in namespace locked (secrets ")
    assert 'cannot get resource "secrets"' in message
    assert "give the webhook's ServiceAccount get on secrets and serviceaccounts" in message
    with pytest.raises(KubernetesError) as caught:
        await cluster.client.pull_secret_credentials(ResolveContext("locked"))
    assert str(caught.value).startswith(
        "the webhook may not read serviceaccounts in namespace locked (serviceaccounts "
    )


async def test_answers_are_cached_and_shared(cluster: Cluster) -> None:
    cluster.api.delay = 0.05
    context = ResolveContext("team-a", ("regcred", "missing"))
    # Concurrent resolutions of one review share one request per object.
    results = await asyncio.gather(
        *(cluster.client.pull_secret_credentials(context) for _ in range(5))
    )
    assert all([c.source for c in r] == ["pull secret team-a/regcred"] for r in results)
    assert len(cluster.api.requests) == 2
    cluster.clock.now += 29
    await cluster.client.pull_secret_credentials(context)
    assert len(cluster.api.requests) == 2  # found and not found, both cached
    cluster.clock.now += 2
    await cluster.client.pull_secret_credentials(context)
    assert len(cluster.api.requests) == 4


async def test_a_caller_that_gives_up_leaves_the_answer_for_the_next(cluster: Cluster) -> None:
    cluster.api.delay = 0.2
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cluster.client.get_secret("team-a", "regcred")
    assert await cluster.client.get_secret("team-a", "regcred") is not None
    assert len(cluster.api.requests) == 1


async def test_rotated_token_is_reread(cluster: Cluster) -> None:
    assert await cluster.client.get_secret("team-a", "regcred") is not None
    cluster.api.token = "rotated-" + os.urandom(8).hex()
    cluster.config.token_file.write_text(cluster.api.token)
    assert await cluster.client.get_secret("team-a", "hub") is not None
    assert cluster.api.requests[-1][1] == f"Bearer {cluster.api.token}"
    assert len(cluster.api.requests) == 2


async def test_401_rereads_the_token_once(cluster: Cluster) -> None:
    token_file = cluster.config.token_file
    assert await cluster.client.get_secret("team-a", "regcred") is not None
    # A new token of the same size and mtime: only the 401 tells the client to re-read it.
    before = token_file.stat()
    cluster.api.token = cluster.api.token[:6] + os.urandom(8).hex()
    token_file.write_text(cluster.api.token + "\n")
    os.utime(token_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert await cluster.client.get_secret("team-a", "hub") is not None
    assert [a == f"Bearer {cluster.api.token}" for _, a, _ in cluster.api.requests] == [
        False,
        False,
        True,
    ]
    # A token the API server does not take at all.
    cluster.api.token = "revoked"
    with pytest.raises(KubernetesError, match=r"refused the webhook's ServiceAccount token"):
        await cluster.client.get_secret("team-a", "legacy")


async def test_unreachable_or_untrusted_api_server(cluster: Cluster, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other-ca")
    untrusted = KubeClient(
        ClusterConfig(cluster.config.server, cluster.config.token_file, other.ca_cert)
    )
    try:
        with pytest.raises(KubernetesError, match="cannot reach the Kubernetes API at https://"):
            await untrusted.get_secret("team-a", "regcred")
    finally:
        await untrusted.close()
    assert cluster.api.requests == []
    cluster.config.token_file.unlink()
    with pytest.raises(KubernetesError, match="cannot read the ServiceAccount token"):
        await cluster.client.get_secret("team-a", "regcred")


def test_in_cluster_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("ca")
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = ClusterConfig.in_cluster(environ=environ, directory=tmp_path)
    assert config == ClusterConfig("https://10.96.0.1:443", tmp_path / "token", tmp_path / "ca.crt")
    assert in_cluster(environ, tmp_path)
    ipv6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert (
        ClusterConfig.in_cluster(environ=ipv6, directory=tmp_path).server == "https://[fd00::1]:443"
    )
    with pytest.raises(KubernetesError, match="not running in a Kubernetes pod"):
        ClusterConfig.in_cluster(environ={}, directory=tmp_path)
    assert not in_cluster({}, tmp_path)
    (tmp_path / "token").unlink()
    with pytest.raises(KubernetesError, match="automountServiceAccountToken"):
        ClusterConfig.in_cluster(environ=environ, directory=tmp_path)


def test_credentials_from_secret_types() -> None:
    assert (
        credentials_from_secret(Secret("ns", "s", "Opaque", {".dockerconfigjson": b"{}"})) is None
    )
    empty = Secret("ns", "s", "kubernetes.io/dockerconfigjson", {})
    with pytest.raises(
        ValueError, match=r"pull secret ns/s: type kubernetes\.io/dockerconfigjson but no"
    ):
        credentials_from_secret(empty)
    legacy = Secret(
        "ns",
        "s",
        "kubernetes.io/dockercfg",
        {".dockercfg": b'{"r.example": {"username": "u", "password": "p"}}'},
    )
    found = credentials_from_secret(legacy)
    assert found is not None and found.for_host("r.example") == BasicAuth("u", "p")
