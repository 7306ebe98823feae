"""Resolving tags in other registries over the OCI distribution API.

One ``HEAD /v2/<path>/manifests/<tag>`` accepting indexes first, so a multi-arch tag gives
its index digest (what every node can pull); the digest is the ``Docker-Content-Digest``
header, or, from a registry that leaves it out, the hash of a GET's body.

Authentication follows the registries' challenges: the first request to a registry goes
anonymously; a 401 names ``Basic`` (send credentials) or ``Bearer realm,service`` (get a token
for ``repository:<path>:pull`` from the realm, with credentials if there are any, anonymously
otherwise). The challenge is remembered per registry, so later resolutions send credentials
at once; tokens are cached until they expire. Credentials are tried in the order the kubelet
uses them: the workload's pull secrets, then the configured Docker config file.

Every resolution has one deadline (``timeout``), and every failure is a ``ResolveError`` whose
message names the image and says what to fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from moorage import metrics
from moorage.admission.credentials import BasicAuth, Credentials
from moorage.admission.resolver import Resolution, ResolveContext, ResolveError
from moorage.digest import Digest
from moorage.errors import RegistryError
from moorage.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from moorage.reference import DOCKER_HUB, ImageReference

log = logging.getLogger("moorage.admission")

#: Indexes included: a multi-arch tag must resolve to its index, not to one platform's image.
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])
DOCKER_HUB_API = "registry-1.docker.io"
MAX_MANIFEST = 4 * 1024 * 1024
MAX_TOKEN_RESPONSE = 1024 * 1024
DEFAULT_TOKEN_LIFETIME = 60.0

SecretsFor = Callable[[ResolveContext], Awaitable[list[Credentials]]]
ConfigCredentials = Credentials | Callable[[], Credentials]


@dataclass
class Challenge:
    """One ``WWW-Authenticate`` challenge: lowercase scheme and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


_TOKEN = re.compile(r"[\s,]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)")
_VALUE = re.compile(r'\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 9110 ``auth-scheme auth-param, ...``)."""
    found: list[Challenge] = []
    for header in headers:
        position, current = 0, None
        while match := _TOKEN.match(header, position):
            position = match.end()
            value = _VALUE.match(header, position)
            if value is not None and current is not None:
                quoted, plain = value.group(1), value.group(2)
                text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
                current.params[match.group(1).lower()] = text
                position = value.end()
            else:
                current = Challenge(match.group(1).lower())
                found.append(current)
    return found


def api_host(domain: str) -> str:
    """Where a registry's API answers: Docker Hub's is not ``docker.io``."""
    return DOCKER_HUB_API if domain == DOCKER_HUB else domain


class _Refused(Exception):
    """These credentials (or none) were not accepted; try the next ones."""


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class _Candidates:
    auths: list[tuple[BasicAuth, str]]
    notes: list[str]


class RemoteResolver:
    """Resolves tags of other registries; one ``aiohttp.ClientSession``, closed by ``close()``."""

    def __init__(
        self,
        *,
        credentials: ConfigCredentials | None = None,
        secrets_for: SecretsFor | None = None,
        insecure_hosts: frozenset[str] = frozenset(),
        ca_file: Path | None = None,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = "moorage",
    ) -> None:
        self.credentials = credentials
        self.secrets_for = secrets_for
        self.insecure_hosts = insecure_hosts
        self.timeout = timeout
        self.clock = clock
        self.user_agent = user_agent
        self._ssl = ssl.create_default_context()
        if ca_file is not None:
            try:
                self._ssl.load_verify_locations(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the CA file {ca_file}: {exc}") from None
        self._session: aiohttp.ClientSession | None = None
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, str, BasicAuth | None], _Token] = {}

    def scheme(self, domain: str) -> str:
        host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
        insecure = domain in self.insecure_hosts or host in self.insecure_hosts
        return "http" if insecure else "https"

    def manifest_url(self, reference: ImageReference) -> str:
        target = reference.tag or reference.digest
        host = api_host(reference.domain)
        return f"{self.scheme(reference.domain)}://{host}/v2/{reference.path}/manifests/{target}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                headers={"User-Agent": self.user_agent},
                trust_env=True,  # HTTPS_PROXY / NO_PROXY, as container runtimes do
            )
        return self._session

    async def resolve(self, reference: ImageReference, context: ResolveContext) -> Resolution:
        """The digest, or a ``ResolveError`` counted in
        ``moorage_resolver_upstream_errors_total`` by reason."""
        host = api_host(reference.domain)
        errors = metrics.current().upstream_errors
        try:
            async with asyncio.timeout(self.timeout):
                digest = await self._resolve(reference, context)
        except ResolveError:  # the registry answered, but not with a digest
            errors.labels("answer").inc()
            raise
        except TimeoutError:
            errors.labels("timeout").inc()
            raise ResolveError(
                f"{reference}: no answer from {host} within {self.timeout:g} s"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            errors.labels("tls").inc()
            raise ResolveError(
                f"{reference}: the TLS certificate of {exc.host} is not trusted "
                f"({exc.certificate_error}); give the webhook its CA (admission.ca_file)"
            ) from None
        except aiohttp.ClientConnectorSSLError as exc:
            errors.labels("tls").inc()
            raise ResolveError(
                f"{reference}: TLS with {exc.host}:{exc.port} failed ({exc.os_error}); if it "
                "serves plain HTTP, list it in admission.insecure_registries"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            errors.labels("connection").inc()
            reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
            raise ResolveError(
                f"{reference}: could not connect to {exc.host}:{exc.port}: {reason}"
            ) from None
        except aiohttp.ClientError as exc:
            errors.labels("request").inc()
            raise ResolveError(f"{reference}: request to {host} failed: {exc}") from None
        return Resolution(digest, "remote")

    async def _resolve(self, reference: ImageReference, context: ResolveContext) -> str:
        url = self.manifest_url(reference)
        host = api_host(reference.domain)
        challenge = self._challenges.get(host)
        anonymous_tried = challenge is None
        if challenge is None:
            status = await self._request(reference, url, None)
            if isinstance(status, str):
                return status
            if status.scheme == "":
                raise ResolveError(
                    f"{reference}: unauthorized (401) and {host} did not say how to log in"
                )
            challenge = self._challenges[host] = status
        candidates = await self._candidates(reference, context)
        attempts: list[BasicAuth | None] = [auth for auth, _ in candidates.auths] or [None]
        for auth in attempts:
            if auth is None and challenge.scheme == "basic" and anonymous_tried:
                continue
            try:
                header = await self._authorization(reference, challenge, auth)
                outcome = await self._request(reference, url, header)
            except _Refused:
                continue
            if isinstance(outcome, str):
                return outcome
        self._challenges.pop(host, None)
        raise ResolveError(self._unauthorized(reference, candidates))

    def _unauthorized(self, reference: ImageReference, candidates: _Candidates) -> str:
        domain = reference.domain
        if candidates.auths:
            sources = ", ".join(dict.fromkeys(source for _, source in candidates.auths))
            message = f"{reference}: unauthorized: {domain} refused the credentials from {sources}"
        else:
            message = (
                f"{reference}: unauthorized: no credentials for {domain} in the pull secrets "
                "or the docker config"
            )
        return "; ".join([message, *candidates.notes])

    async def _candidates(self, reference: ImageReference, context: ResolveContext) -> _Candidates:
        found: list[tuple[BasicAuth, str]] = []
        notes: list[str] = []
        sources: list[Credentials] = []
        if self.secrets_for is not None:
            try:
                sources += await self.secrets_for(context)
            except ResolveError as exc:
                log.warning("pull secrets of %s: %s", reference, exc)
                notes.append(f"the pull secrets could not be read: {exc}")
        config = self.credentials() if callable(self.credentials) else self.credentials
        if config is not None:
            sources.append(config)
            if config.helper_for(reference.domain):
                notes.append(
                    f"{config.source} sends {reference.domain} to a credential helper, which "
                    "the webhook cannot run: put the credentials in its auths"
                )
        for credentials in sources:
            for auth in credentials.matching(reference.domain, reference.path):
                if all(auth != seen for seen, _ in found):
                    found.append((auth, credentials.source))
        return _Candidates(found, notes)

    async def _request(
        self, reference: ImageReference, url: str, authorization: str | None
    ) -> str | Challenge:
        """The digest, or the challenge of a 401 (scheme "" if none); raises otherwise.

        Raises ``_Refused`` for a 401/403 to a request that carried credentials.
        """
        headers = {"Accept": ACCEPT}
        if authorization:
            headers["Authorization"] = authorization
        async with self._client().head(url, headers=headers, allow_redirects=True) as response:
            status = response.status
            digest = response.headers.get("Docker-Content-Digest")
            challenges = parse_challenges(response.headers.getall("WWW-Authenticate", []))
        if status in (401, 403) and authorization:
            raise _Refused
        if status == 401:
            by_scheme = {c.scheme: c for c in challenges}
            return by_scheme.get("bearer") or by_scheme.get("basic") or Challenge("")
        if status == 200:
            if digest:
                return _parse_digest(reference, digest)
            return await self._digest_from_body(reference, url, headers)
        raise ResolveError(_failure(reference, status))

    async def _digest_from_body(
        self, reference: ImageReference, url: str, headers: dict[str, str]
    ) -> str:
        async with self._client().get(url, headers=headers) as response:
            if response.status != 200:
                raise ResolveError(_failure(reference, response.status))
            claimed = response.headers.get("Docker-Content-Digest")
            body = await _read_limited(response, MAX_MANIFEST, f"{reference}: manifest")
        claimed = _parse_digest(reference, claimed) if claimed else None
        actual = str(Digest.of(body, claimed.split(":")[0] if claimed else "sha256"))
        if claimed is not None and claimed != actual:
            raise ResolveError(
                f"{reference}: the registry says the manifest is {claimed} but its content "
                f"hashes to {actual}"
            )
        return actual

    async def _authorization(
        self, reference: ImageReference, challenge: Challenge, auth: BasicAuth | None
    ) -> str | None:
        if challenge.scheme == "basic":
            return auth.header() if auth is not None else None
        if challenge.scheme != "bearer":
            raise ResolveError(
                f"{reference}: {api_host(reference.domain)} asks for {challenge.scheme!r} "
                "authentication, which moorage does not speak (Basic or Bearer)"
            )
        return f"Bearer {await self._token(reference, challenge, auth)}"

    async def _token(
        self, reference: ImageReference, challenge: Challenge, auth: BasicAuth | None
    ) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise ResolveError(
                f"{reference}: {api_host(reference.domain)} sent a Bearer challenge without "
                f"a usable realm ({realm!r})"
            )
        service = challenge.params.get("service", "")
        scope = f"repository:{reference.path}:pull"
        key = (realm, service, scope, auth)
        cached = self._tokens.get(key)
        now = self.clock()
        if cached is not None and cached.expires > now:
            return cached.value
        session = self._client()
        if auth is not None and auth.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": auth.identity_token}
            form |= {"service": service, "scope": scope, "client_id": self.user_agent}
            request = session.post(realm, data=form)
        else:
            params = {"scope": scope, **({"service": service} if service else {})}
            headers = {"Authorization": auth.header()} if auth is not None else {}
            request = session.get(realm, params=params, headers=headers)
        async with request as response:
            if response.status in (401, 403):
                raise _Refused
            if response.status != 200:
                raise ResolveError(
                    f"{reference}: the token server {realm} answered {response.status} "
                    f"{response.reason or ''}".rstrip()
                )
            body = await _read_limited(response, MAX_TOKEN_RESPONSE, f"{reference}: token")
        token, lifetime = _parse_token(reference, realm, body)
        if len(self._tokens) >= 1000:
            self._tokens.clear()
        self._tokens[key] = _Token(token, now + lifetime * 0.9)
        return token


def _parse_token(reference: ImageReference, realm: str, body: bytes) -> tuple[str, float]:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        token = document.get("token") or document.get("access_token")
        expires = document.get("expires_in")
        if isinstance(token, str) and token:
            if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0:
                return token, float(expires)
            return token, DEFAULT_TOKEN_LIFETIME
    raise ResolveError(f"{reference}: the token server {realm} sent no token")


def _parse_digest(reference: ImageReference, value: str) -> str:
    try:
        return str(Digest.parse(value.strip()))
    except RegistryError as exc:
        raise ResolveError(f"{reference}: the registry sent a bad digest: {exc.message}") from None


def _failure(reference: ImageReference, status: int) -> str:
    if status == 404:
        return f"{reference}: manifest unknown (404)"
    if status == 429:
        return f"{reference}: too many requests (429): the registry is rate-limiting pulls"
    if status == 403:
        return f"{reference}: denied (403): the registry refuses anonymous pulls of it"
    return f"{reference}: the registry answered {status}"


async def _read_limited(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ResolveError(f"{what} larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
