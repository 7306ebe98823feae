"""moorage.admission.kube: what only a stand-in API server can show, and the configuration.

The client's main test runs against a real kube-apiserver (``test_kube_apiserver.py``: secrets
and ServiceAccounts of every shape, 404s, RBAC's 403s, a token it refuses, a token file
rewritten, a CA that does not match). Here the API server is an aiohttp server over HTTPS (a CA
made by the openssl CLI) answering with responses recorded from a real one (``recorded/``), for
what a real one cannot be made to show:

- how many requests the client sends, and with which headers: concurrent resolutions share
  one request per object, and answers (found or not) are cached for their TTL;
- an API server that answers slowly: a caller that gives up leaves the answer for the next;
- a token file replaced by one of the same size and modification time while the API server
  stops taking the old token: only the 401 makes the client read the file again.

Then what needs no server at all: an address where nothing answers, the configuration
(in-cluster, or an API server named in the settings) and the types of secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
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
from moorage.admission.setup import cluster_config
from moorage.config import Settings, load_settings
from moorage.documents import DocumentError
from tests.support.clients import Pki, make_pki
from tests.support.clocks import ManualClock
from tests.support.server import free_port

RECORDED = Path(__file__).parent / "recorded"
NS = "/api/v1/namespaces"
ROUTES = {
    f"{NS}/team-a/secrets/regcred": "secret-team-a-regcred.json",
    f"{NS}/team-a/secrets/legacy": "secret-team-a-legacy.json",
    f"{NS}/team-a/secrets/hub": "secret-team-a-hub.json",
    f"{NS}/team-a/secrets/missing": "status-404-secret-missing.json",
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
    #: Seconds the server takes for each answer: a slow API server (it plays the part).
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Cluster:
    api: FakeApiServer
    config: ClusterConfig
    clock: ManualClock
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
    clock = ManualClock(100.0)
    client = KubeClient(config, clock=clock)
    yield Cluster(api, config, clock, client)
    await client.close()


async def test_answers_are_cached_and_shared(cluster: Cluster) -> None:
    cluster.api.delay = 0.05
    context = ResolveContext("team-a", ("regcred", "missing"))
    # Concurrent resolutions of one review share one request per object.
    results = await asyncio.gather(
        *(cluster.client.pull_secret_credentials(context) for _ in range(5))
    )
    assert all([c.source for c in r] == ["pull secret team-a/regcred"] for r in results)
    assert len(cluster.api.requests) == 2
    for _, authorization, accept in cluster.api.requests:
        assert (authorization, accept) == (f"Bearer {cluster.api.token}", "application/json")
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
    # A token the API server does not take at all: asked once more, after reading it again.
    cluster.api.token = "revoked"
    with pytest.raises(KubernetesError, match=r"refused the webhook's ServiceAccount token from"):
        await cluster.client.get_secret("team-a", "legacy")
    assert len(cluster.api.requests) == 5


async def test_an_api_server_nobody_answers_at(tmp_path: Path, pki: Pki) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    server = f"https://127.0.0.1:{free_port()}"
    client = KubeClient(ClusterConfig.explicit(server, token, pki.ca_cert))
    try:
        with pytest.raises(KubernetesError, match=f"cannot reach the Kubernetes API at {server}: "):
            await client.get_secret("team-a", "regcred")
    finally:
        await client.close()


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


def test_explicit_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("ca")
    config = ClusterConfig.explicit(
        "https://10.0.0.1:6443/", tmp_path / "token", tmp_path / "ca.crt"
    )
    assert config == ClusterConfig("https://10.0.0.1:6443", tmp_path / "token", tmp_path / "ca.crt")
    assert ClusterConfig.explicit("https://k8s.example", tmp_path / "token").ca_file is None
    with pytest.raises(KubernetesError, match=r"the Kubernetes API token file .*/nope does not"):
        ClusterConfig.explicit("https://10.0.0.1:6443", tmp_path / "nope")
    with pytest.raises(KubernetesError, match=r"the Kubernetes API CA file .*/ca.pem does not"):
        ClusterConfig.explicit("https://10.0.0.1:6443", tmp_path / "token", tmp_path / "ca.pem")


async def test_a_ca_file_that_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("not a certificate")
    config = ClusterConfig.explicit(
        "https://10.0.0.1:6443", tmp_path / "token", tmp_path / "ca.crt"
    )
    with pytest.raises(KubernetesError, match=r"cannot load the Kubernetes API's CA file .*ca.crt"):
        KubeClient(config)


def settings(tmp_path: Path, **admission: str) -> Settings:
    """Settings from an ``[admission]`` table of ``admission`` (TOML values)."""
    path = tmp_path / "moorage.toml"
    path.write_text("[admission]\n" + "".join(f"{k} = {v}\n" for k, v in admission.items()))
    return load_settings(path, env={})


def test_which_api_server_the_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t")
    ca.write_text("ca")
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    # Outside a pod, "auto" uses the Kubernetes API only when one is named.
    assert cluster_config(settings(tmp_path)) is None
    named = settings(
        tmp_path,
        kubernetes_api='"https://127.0.0.1:6443"',
        kubernetes_token_file=f'"{token}"',
        kubernetes_ca_file=f'"{ca}"',
    )
    assert cluster_config(named) == ClusterConfig("https://127.0.0.1:6443", token, ca)
    on = dataclasses.replace(named, admission=dataclasses.replace(named.admission, kubernetes="on"))
    assert cluster_config(on) == ClusterConfig("https://127.0.0.1:6443", token, ca)
    off = dataclasses.replace(
        named, admission=dataclasses.replace(named.admission, kubernetes="off")
    )
    assert cluster_config(off) is None
    # "on" without a named API server wants the pod's configuration.
    with pytest.raises(KubernetesError, match="not running in a Kubernetes pod"):
        cluster_config(settings(tmp_path, kubernetes='"on"'))
    # The same from the environment.
    environment = {
        "MOORAGE_ADMISSION_KUBERNETES_API": "https://[fd00::1]:6443",
        "MOORAGE_ADMISSION_KUBERNETES_TOKEN_FILE": str(token),
    }
    assert cluster_config(load_settings(env=environment)) == (
        ClusterConfig("https://[fd00::1]:6443", token, None)
    )


@pytest.mark.parametrize(
    ("admission", "message"),
    [
        (
            {"kubernetes_api": '"https://127.0.0.1:6443"'},
            "admission.kubernetes_token_file: missing (admission.kubernetes_api needs a file "
            "holding the token to send: kubectl create token SERVICEACCOUNT makes one)",
        ),
        (
            {"kubernetes_api": '"http://127.0.0.1:8001"', "kubernetes_token_file": '"/t"'},
            "admission.kubernetes_api: must be the API server's URL, https://HOST:PORT, not "
            "'http://127.0.0.1:8001'",
        ),
        (
            {"kubernetes_api": '"127.0.0.1:6443"', "kubernetes_token_file": '"/t"'},
            "admission.kubernetes_api: must be the API server's URL, https://HOST:PORT, not "
            "'127.0.0.1:6443'",
        ),
        (
            {"kubernetes_api": '"https://127.0.0.1:api"', "kubernetes_token_file": '"/t"'},
            "admission.kubernetes_api: must be the API server's URL",
        ),
        (
            {"kubernetes_token_file": '"/t"'},
            "admission.kubernetes_token_file: used with admission.kubernetes_api (the "
            "Kubernetes API server's https:// URL): set that too",
        ),
        ({"kubernetes_ca_file": '"/ca.crt"'}, "admission.kubernetes_ca_file: used with"),
    ],
)
def test_settings_for_an_api_server_that_cannot_be_used(
    tmp_path: Path, admission: dict[str, str], message: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        settings(tmp_path, **admission)
    assert str(caught.value).startswith(f"config file {tmp_path / 'moorage.toml'}: ")
    assert message in str(caught.value)


def test_a_named_token_file_that_is_missing_stops_the_webhooks(tmp_path: Path) -> None:
    missing = settings(
        tmp_path,
        kubernetes_api='"https://127.0.0.1:6443"',
        kubernetes_token_file=f'"{tmp_path / "nope"}"',
    )
    with pytest.raises(KubernetesError, match=r"the Kubernetes API token file .* does not exist"):
        cluster_config(missing)
