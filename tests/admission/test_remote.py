"""moorage.admission.remote: resolving tags of other registries over the OCI API.

Against real registries on loopback: CNCF Distribution 2.8 over HTTPS (a throwaway CA) with
htpasswd basic auth, and ``moorage serve`` over plain HTTP (an insecure host, anonymous).
Bearer tokens, registries that leave out the digest header and registries that never answer
are small aiohttp servers in the tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from moorage.admission.credentials import (
    BasicAuth,
    Credentials,
    load_docker_config,
    parse_docker_config,
)
from moorage.admission.kube import KubernetesError
from moorage.admission.remote import ACCEPT, RemoteResolver, parse_challenges
from moorage.admission.resolver import ResolveContext, ResolveError
from moorage.reference import parse_reference
from tests.support.clients import Pki, make_pki
from tests.support.clocks import ManualClock
from tests.support.distribution import basic_entry, docker_config, start_distribution
from tests.support.http import push_image
from tests.support.images import Image, index_of, multiarch_image, random_image
from tests.support.metrics import sample
from tests.support.server import RunningRegistry, free_port

USER, PASSWORD = "alice", f"pw-{os.urandom(6).hex()}"
CONTEXT = ResolveContext(namespace="team-a")
SMALL = (512, 1024)

AiohttpServer = Callable[..., Any]


# -- the images each registry holds --------------------------------------------------------------


@dataclass
class Pushed:
    """What a registry fixture holds: ``team/app:1.0`` and the multi-arch ``team/app:multi``."""

    registry: RunningRegistry
    image: Image
    index: Image


def push_test_images(
    registry: RunningRegistry,
    tls: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Pushed:
    image = random_image(layer_sizes=SMALL)
    index = multiarch_image(layer_sizes=SMALL)
    for pushed, tag in ((image, "1.0"), (index, "multi")):
        push_image(registry.address, "team/app", pushed, tag, tls=tls, headers=headers)
    return Pushed(registry, image, index)


# -- CNCF Distribution with htpasswd over HTTPS ---------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Pushed]:
    workdir = tmp_path_factory.mktemp("distribution")
    registry = start_distribution(workdir, pki, {USER: PASSWORD})
    try:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        yield push_test_images(registry, context, {"Authorization": f"Basic {basic}"})
    finally:
        registry.stop()


@pytest.fixture
async def make_resolver() -> AsyncIterator[Callable[..., RemoteResolver]]:
    made: list[RemoteResolver] = []

    def make(**kwargs: Any) -> RemoteResolver:
        made.append(RemoteResolver(**kwargs))
        return made[-1]

    yield make
    for resolver in made:
        await resolver.close()


async def test_distribution_basic_auth_from_docker_config(
    distribution: Pushed, pki: Pki, tmp_path: Path, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = distribution.registry.address
    config = docker_config(tmp_path / "config.json", {address: basic_entry(USER, PASSWORD)})
    resolver = make_resolver(credentials=load_docker_config(config), ca_file=pki.ca_cert)
    single = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert single.digest == distribution.image.digest
    assert single.source == "remote"
    multi = await resolver.resolve(parse_reference(f"{address}/team/app:multi"), CONTEXT)
    assert multi.digest == distribution.index.digest
    # The Basic challenge is remembered: the next resolution sends credentials at once.
    again = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert again.digest == single.digest


async def test_distribution_without_credentials_is_unauthorized(
    distribution: Pushed, pki: Pki, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = distribution.registry.address
    resolver = make_resolver(ca_file=pki.ca_cert)
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert str(caught.value) == (
        f"{address}/team/app:1.0: unauthorized: no credentials for {address} in the pull "
        "secrets or the docker config"
    )


async def test_distribution_wrong_password_is_refused(
    distribution: Pushed, pki: Pki, tmp_path: Path, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = distribution.registry.address
    config = docker_config(tmp_path / "config.json", {address: basic_entry(USER, "wrong")})
    resolver = make_resolver(credentials=load_docker_config(config), ca_file=pki.ca_cert)
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert f"unauthorized: {address} refused the credentials from docker config {config}" in str(
        caught.value
    )


async def test_distribution_unknown_tag(
    distribution: Pushed, pki: Pki, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = distribution.registry.address
    credentials = Credentials("test", ())
    secret = parse_docker_config(
        json.dumps({"auths": {address: basic_entry(USER, PASSWORD)}}), "pull secret team-a/reg"
    )

    async def secrets_for(context: ResolveContext) -> list[Credentials]:
        return [secret]

    resolver = make_resolver(credentials=credentials, secrets_for=secrets_for, ca_file=pki.ca_cert)
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:nope"), CONTEXT)
    assert str(caught.value) == f"{address}/team/app:nope: manifest unknown (404)"


async def test_pull_secrets_come_before_the_docker_config(
    distribution: Pushed, pki: Pki, make_resolver: Callable[..., RemoteResolver]
) -> None:
    """As the kubelet does: the workload's pull secrets first; a refused one is not the end."""
    address = distribution.registry.address
    wrong = parse_docker_config(
        json.dumps({"auths": {address: basic_entry(USER, "stale")}}), "pull secret team-a/old"
    )
    right = parse_docker_config(
        json.dumps({"auths": {address: basic_entry(USER, PASSWORD)}}), "pull secret team-a/new"
    )
    seen: list[ResolveContext] = []

    async def secrets_for(context: ResolveContext) -> list[Credentials]:
        seen.append(context)
        return [wrong, right]

    config = parse_docker_config(json.dumps({"auths": {}}), "docker config x")
    resolver = make_resolver(credentials=config, secrets_for=secrets_for, ca_file=pki.ca_cert)
    context = ResolveContext("team-a", ("old", "new"), "builder")
    resolution = await resolver.resolve(parse_reference(f"{address}/team/app:multi"), context)
    assert resolution.digest == distribution.index.digest
    assert seen == [context]


async def test_unreadable_pull_secrets_are_explained(
    distribution: Pushed, pki: Pki, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = distribution.registry.address

    async def secrets_for(context: ResolveContext) -> list[Credentials]:
        raise KubernetesError("the webhook may not read secrets in namespace team-a")

    resolver = make_resolver(secrets_for=secrets_for, ca_file=pki.ca_cert)
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    message = str(caught.value)
    assert "unauthorized: no credentials for" in message
    assert "the pull secrets could not be read: the webhook may not read secrets" in message
    # The docker config still works when the secrets cannot be read.
    config = parse_docker_config(
        json.dumps({"auths": {address: basic_entry(USER, PASSWORD)}}), "docker config x"
    )
    resolver = make_resolver(credentials=config, secrets_for=secrets_for, ca_file=pki.ca_cert)
    resolution = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert resolution.digest == distribution.image.digest


async def test_untrusted_certificate(
    distribution: Pushed, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = distribution.registry.address
    resolver = make_resolver()
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert f"{address}/team/app:1.0: the TLS certificate of 127.0.0.1 is not trusted" in str(
        caught.value
    )


# -- moorage serve over plain HTTP, anonymous -----------------------------------------------------


@pytest.fixture(scope="module")
def moorage_images(moorage_server: RunningRegistry) -> Pushed:
    return push_test_images(moorage_server)


async def test_moorage_insecure_host_anonymous(
    moorage_images: Pushed, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = moorage_images.registry.address
    resolver = make_resolver(insecure_hosts=frozenset({address}))
    single = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert single.digest == moorage_images.image.digest
    multi = await resolver.resolve(parse_reference(f"{address}/team/app:multi"), CONTEXT)
    assert multi.digest == moorage_images.index.digest
    with pytest.raises(ResolveError, match=r"team/app:gone: manifest unknown \(404\)"):
        await resolver.resolve(parse_reference(f"{address}/team/app:gone"), CONTEXT)


async def test_plain_http_only_for_insecure_hosts(
    moorage_images: Pushed, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = moorage_images.registry.address
    resolver = make_resolver()
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert str(caught.value).startswith(f"{address}/team/app:1.0: TLS with {address} failed (")
    assert str(caught.value).endswith("list it in admission.insecure_registries")


# -- a registry with a token server ---------------------------------------------------------------

REFRESH_TOKEN = "refresh-" + os.urandom(4).hex()
#: What the scripted registries serve: an empty image index.
MANIFEST = index_of([]).manifest
MANIFEST_DIGEST = index_of([]).digest


@dataclass
class TokenRegistry:
    """A registry (``team/app:1.0``, private; ``public/app:1.0``, anonymous) with Bearer auth."""

    server: TestServer | None = None
    token_requests: list[dict[str, str]] = field(default_factory=list)
    manifest_requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> the scope it grants
    token_field: str = "token"
    expires_in: int | None = 300
    send_digest: bool = True
    digest_header: str = MANIFEST_DIGEST

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"{self.server.host}:{self.server.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_post("/token", self.token)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", self.manifest)
        return app

    def _issue(self, scope: str, who: str) -> web.Response:
        token = f"{who}-{len(self.tokens)}-{os.urandom(4).hex()}"
        self.tokens[token] = scope
        body: dict[str, Any] = {self.token_field: token}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)

    async def token(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params = {k: str(v) for k, v in (await request.post()).items()}
        params["method"] = request.method
        params["authorization"] = request.headers.get("Authorization", "")
        self.token_requests.append(params)
        if params.get("service") != "test-registry":
            return web.json_response({"details": "wrong service"}, status=400)
        scope = params.get("scope", "")
        if request.method == "POST":
            if (
                params.get("grant_type") == "refresh_token"
                and params["refresh_token"] == REFRESH_TOKEN
            ):
                return self._issue(scope, "refreshed")
            return web.json_response({"error": "invalid_grant"}, status=401)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if params["authorization"] == expected:
            return self._issue(scope, USER)
        if params["authorization"]:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        return self._issue(scope if scope.startswith("repository:public/") else "", "anonymous")

    async def manifest(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        authorization = request.headers.get("Authorization", "")
        self.manifest_requests.append((request.method, authorization))
        token = authorization.removeprefix("Bearer ")
        if self.tokens.get(token) != f"repository:{name}:pull":
            challenge = (
                f'Bearer realm="http://{self.address}/token",service="test-registry",'
                f'scope="repository:{name}:pull"'
            )
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        assert request.headers["Accept"] == ACCEPT
        if reference != "1.0":
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if self.send_digest:
            headers["Docker-Content-Digest"] = self.digest_header
        return web.Response(body=MANIFEST, headers=headers)


@pytest.fixture
async def token_registry(aiohttp_server: AiohttpServer) -> TokenRegistry:
    registry = TokenRegistry()
    registry.server = await aiohttp_server(registry.app())
    return registry


def hub_credentials(address: str, entry: dict[str, str]) -> Credentials:
    return parse_docker_config(json.dumps({"auths": {address: entry}}), "docker config test")


async def test_bearer_token_with_basic_credentials(
    token_registry: TokenRegistry, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = token_registry.address
    clock = ManualClock(1000.0)
    resolver = make_resolver(
        credentials=hub_credentials(address, basic_entry(USER, PASSWORD)),
        insecure_hosts=frozenset({address}),
        clock=clock,
    )
    reference = parse_reference(f"{address}/team/app:1.0")
    resolution = await resolver.resolve(reference, CONTEXT)
    assert resolution.digest == MANIFEST_DIGEST
    [asked] = token_registry.token_requests
    assert asked["service"] == "test-registry"
    assert asked["scope"] == "repository:team/app:pull"
    assert asked["authorization"].startswith("Basic ")
    # Anonymous first, then with the token.
    assert [a.split(" ")[0] for _, a in token_registry.manifest_requests] == ["", "Bearer"]
    # The token is cached until it expires; the challenge is remembered.
    await resolver.resolve(reference, CONTEXT)
    assert len(token_registry.token_requests) == 1
    assert len(token_registry.manifest_requests) == 3
    clock.now += 300
    await resolver.resolve(reference, CONTEXT)
    assert len(token_registry.token_requests) == 2


async def test_bearer_token_anonymous_and_access_token(
    token_registry: TokenRegistry, make_resolver: Callable[..., RemoteResolver]
) -> None:
    token_registry.token_field = "access_token"
    token_registry.expires_in = None
    address = token_registry.address
    clock = ManualClock(1000.0)
    resolver = make_resolver(insecure_hosts=frozenset({address}), clock=clock)
    reference = parse_reference(f"{address}/public/app:1.0")
    assert (await resolver.resolve(reference, CONTEXT)).digest == MANIFEST_DIGEST
    assert token_registry.token_requests[0]["authorization"] == ""
    clock.now += 50  # the default lifetime is 60 s
    await resolver.resolve(reference, CONTEXT)
    assert len(token_registry.token_requests) == 1
    clock.now += 20
    await resolver.resolve(reference, CONTEXT)
    assert len(token_registry.token_requests) == 2
    # A private repository with an anonymous token: unauthorized, and nothing to try.
    with pytest.raises(ResolveError, match="unauthorized: no credentials for"):
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)


async def test_bearer_token_refused(
    token_registry: TokenRegistry, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = token_registry.address
    resolver = make_resolver(
        credentials=hub_credentials(address, basic_entry(USER, "nope")),
        insecure_hosts=frozenset({address}),
    )
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert str(caught.value) == (
        f"{address}/team/app:1.0: unauthorized: {address} refused the credentials from "
        "docker config test"
    )


async def test_identity_token_is_a_refresh_token(
    token_registry: TokenRegistry, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = token_registry.address
    resolver = make_resolver(
        credentials=hub_credentials(address, {"username": USER, "identitytoken": REFRESH_TOKEN}),
        insecure_hosts=frozenset({address}),
    )
    resolution = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert resolution.digest == MANIFEST_DIGEST
    [asked] = token_registry.token_requests
    assert asked["method"] == "POST"
    assert asked["grant_type"] == "refresh_token"
    assert asked["scope"] == "repository:team/app:pull"


async def test_missing_digest_header_falls_back_to_get(
    token_registry: TokenRegistry, make_resolver: Callable[..., RemoteResolver]
) -> None:
    token_registry.send_digest = False
    address = token_registry.address
    resolver = make_resolver(
        credentials=hub_credentials(address, basic_entry(USER, PASSWORD)),
        insecure_hosts=frozenset({address}),
    )
    resolution = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert resolution.digest == MANIFEST_DIGEST
    assert [m for m, _ in token_registry.manifest_requests] == ["HEAD", "HEAD", "GET"]


async def test_digest_header_is_checked(
    token_registry: TokenRegistry, make_resolver: Callable[..., RemoteResolver]
) -> None:
    address = token_registry.address
    resolver = make_resolver(
        credentials=hub_credentials(address, basic_entry(USER, PASSWORD)),
        insecure_hosts=frozenset({address}),
    )
    token_registry.digest_header = "sha256:" + "0" * 64
    # HEAD carries a digest: it is believed (HEAD has no body to check it against).
    resolution = await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)
    assert resolution.digest == "sha256:" + "0" * 64
    token_registry.digest_header = "not-a-digest"
    with pytest.raises(ResolveError, match="the registry sent a bad digest"):
        await resolver.resolve(parse_reference(f"{address}/team/app:1.0"), CONTEXT)


async def test_get_body_is_checked_against_its_digest_header(
    aiohttp_server: AiohttpServer, make_resolver: Callable[..., RemoteResolver]
) -> None:
    async def manifest(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(headers={"Content-Type": "application/json"})
        return web.Response(body=MANIFEST, headers={"Docker-Content-Digest": "sha256:" + "1" * 64})

    app = web.Application()
    app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", manifest)
    server = await aiohttp_server(app)
    address = f"{server.host}:{server.port}"
    resolver = make_resolver(insecure_hosts=frozenset({address}))
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"{address}/app:1.0"), CONTEXT)
    assert f"but its content hashes to {MANIFEST_DIGEST}" in str(caught.value)


async def test_rate_limited_and_server_errors(
    aiohttp_server: AiohttpServer, make_resolver: Callable[..., RemoteResolver]
) -> None:
    async def manifest(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["reference"].removeprefix("s")))

    app = web.Application()
    app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", manifest)
    server = await aiohttp_server(app)
    address = f"{server.host}:{server.port}"
    resolver = make_resolver(insecure_hosts=frozenset({address}))
    with pytest.raises(ResolveError, match=r"app:s429: too many requests \(429\)"):
        await resolver.resolve(parse_reference(f"{address}/app:s429"), CONTEXT)
    with pytest.raises(ResolveError, match=r"app:s502: the registry answered 502"):
        await resolver.resolve(parse_reference(f"{address}/app:s502"), CONTEXT)
    with pytest.raises(ResolveError, match=r"unauthorized \(401\) and .* did not say how"):
        await resolver.resolve(parse_reference(f"{address}/app:s401"), CONTEXT)


async def test_basic_challenge_is_remembered_and_redirects_followed(
    aiohttp_server: AiohttpServer, make_resolver: Callable[..., RemoteResolver]
) -> None:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    seen: list[str] = []

    async def manifest(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.match_info["name"] == "moved/app":
            raise web.HTTPTemporaryRedirect("/v2/team/app/manifests/1.0")
        return web.Response(headers={"Docker-Content-Digest": MANIFEST_DIGEST})

    app = web.Application()
    app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", manifest)
    server = await aiohttp_server(app)
    address = f"{server.host}:{server.port}"
    resolver = make_resolver(
        credentials=hub_credentials(address, basic_entry(USER, PASSWORD)),
        insecure_hosts=frozenset({address}),
    )
    reference = parse_reference(f"{address}/team/app:1.0")
    assert (await resolver.resolve(reference, CONTEXT)).digest == MANIFEST_DIGEST
    assert seen == ["", expected]
    assert (await resolver.resolve(reference, CONTEXT)).digest == MANIFEST_DIGEST
    assert seen == ["", expected, expected]
    moved = parse_reference(f"{address}/moved/app:1.0")
    assert (await resolver.resolve(moved, CONTEXT)).digest == MANIFEST_DIGEST
    assert seen[3:] == [expected, expected]
    # Credentials refused: the remembered challenge is dropped, the next try starts anonymous.
    resolver.credentials = hub_credentials(address, basic_entry(USER, "changed"))
    with pytest.raises(ResolveError, match="refused the credentials"):
        await resolver.resolve(reference, CONTEXT)
    del seen[:]
    with pytest.raises(ResolveError, match="refused the credentials"):
        await resolver.resolve(reference, CONTEXT)
    assert len(seen) == 2 and seen[0] == ""


def test_unreadable_ca_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"cannot load the CA file {tmp_path}/nope.crt"):
        RemoteResolver(ca_file=tmp_path / "nope.crt")


# -- deadlines and connection failures ------------------------------------------------------------


async def test_deadline_when_the_registry_never_answers(
    make_resolver: Callable[..., RemoteResolver],
) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accept the connection, read nothing, answer nothing

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        resolver = make_resolver(insecure_hosts=frozenset({f"127.0.0.1:{port}"}), timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ResolveError) as caught:
            await resolver.resolve(parse_reference(f"127.0.0.1:{port}/app:1.0"), CONTEXT)
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 1.5
        assert str(caught.value) == (
            f"127.0.0.1:{port}/app:1.0: no answer from 127.0.0.1:{port} within 0.5 s"
        )
        assert connections, "the resolver never connected"
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_connection_refused(make_resolver: Callable[..., RemoteResolver]) -> None:
    port = free_port()
    resolver = make_resolver(insecure_hosts=frozenset({"127.0.0.1"}))
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(parse_reference(f"127.0.0.1:{port}/app:1.0"), CONTEXT)
    assert str(caught.value).startswith(
        f"127.0.0.1:{port}/app:1.0: could not connect to 127.0.0.1:{port}: "
    )


# -- pure parts -----------------------------------------------------------------------------------


def test_urls() -> None:
    resolver = RemoteResolver(insecure_hosts=frozenset({"local.test:5000", "plain.test"}))
    assert (
        resolver.manifest_url(parse_reference("nginx"))
        == "https://registry-1.docker.io/v2/library/nginx/manifests/latest"
    )
    assert (
        resolver.manifest_url(parse_reference("local.test:5000/a/b:1"))
        == "http://local.test:5000/v2/a/b/manifests/1"
    )
    assert resolver.manifest_url(parse_reference("plain.test:8080/a:1")).startswith("http://")
    assert resolver.manifest_url(parse_reference("local.test/a:1")).startswith("https://")


def test_accept_lists_indexes_and_manifests() -> None:
    assert ACCEPT.split(", ") == [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]


def test_parse_challenges() -> None:
    [bearer] = parse_challenges(
        [
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/nginx:pull"'
        ]
    )
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }
    basic, other = parse_challenges(['Basic realm="Registry \\"Realm\\"", Foo a=b, c="d,e"'])
    assert (basic.scheme, basic.params) == ("basic", {"realm": 'Registry "Realm"'})
    assert (other.scheme, other.params) == ("foo", {"a": "b", "c": "d,e"})
    assert parse_challenges(["", "   "]) == []


def test_credentials_are_not_in_reprs() -> None:
    auth = BasicAuth("user", "hunter2", "refresh")
    assert "hunter2" not in repr(auth) and "refresh" not in repr(auth)


async def test_upstream_errors_are_counted_by_reason(
    aiohttp_server: AiohttpServer, make_resolver: Callable[..., RemoteResolver]
) -> None:
    async def manifest(request: web.Request) -> web.Response:
        return web.Response(status=502)

    app = web.Application()
    app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", manifest)
    server = await aiohttp_server(app)
    answering = f"{server.host}:{server.port}"
    connections: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    silent = await asyncio.start_server(hang, "127.0.0.1", 0)
    hanging = f"127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    refusing = f"127.0.0.1:{free_port()}"
    resolver = make_resolver(insecure_hosts=frozenset({answering, hanging, refusing}), timeout=0.3)
    reasons = ("answer", "timeout", "connection", "tls", "request")
    before = {r: sample("moorage_resolver_upstream_errors_total", reason=r) for r in reasons}
    try:
        for address in (answering, answering, hanging, refusing):
            with pytest.raises(ResolveError):
                await resolver.resolve(parse_reference(f"{address}/app:1.0"), CONTEXT)
    finally:
        for writer in connections:
            writer.close()
        silent.close()
        await silent.wait_closed()
    moved = {
        r: sample("moorage_resolver_upstream_errors_total", reason=r) - before[r] for r in reasons
    }
    assert moved == {"answer": 2, "timeout": 1, "connection": 1, "tls": 0, "request": 0}
