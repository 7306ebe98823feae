"""A minimal Kubernetes API client: the pull secrets of the workloads being admitted.

Where the API server is, and how to prove who we are:

- In a pod (``ClusterConfig.in_cluster``): the API server from
  ``KUBERNETES_SERVICE_HOST``/``_PORT``, the ServiceAccount token and CA from the mounted
  ``/var/run/secrets/kubernetes.io/serviceaccount``.
- Anywhere else (``ClusterConfig.explicit``, from the settings ``admission.kubernetes_api``,
  ``kubernetes_token_file`` and ``kubernetes_ca_file``): the API server's URL, a file holding
  a bearer token (a ServiceAccount token from ``kubectl create token``, for example), and the
  CA that signed the API server's certificate (default: the system's CAs). This is for
  webhooks running outside the cluster they serve.

The token is re-read whenever its file changes (the kubelet rotates projected tokens; a token
file can be rewritten in place) and once more after a 401.

Which secrets count is what the kubelet would use: the workload's ``imagePullSecrets``, or,
when it names none, those of its ServiceAccount (``default`` when unnamed), the way the
ServiceAccount admission plugin fills them into Pods. Secrets of type
``kubernetes.io/dockerconfigjson`` and ``kubernetes.io/dockercfg`` are read; a missing secret
is skipped with a warning, as the kubelet does. Answers (found or not) are cached for
``cache_ttl`` seconds, and concurrent requests for one object share one API call.

``list_objects`` pages through a list endpoint (``limit`` and ``continue``), uncached, for the
cluster inventory (``admission.inventory``). A continue token that expired mid-list (410,
etcd compacted) is followed by the inconsistent one the API server offers, with a warning; a
resource the API server does not serve (404) lists nothing, with a warning; a 403 says which
RBAC rule is missing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from moorage.admission.credentials import Credentials, parse_docker_config
from moorage.admission.resolver import ResolveContext, ResolveError
from moorage.documents import DocumentError

log = logging.getLogger("moorage.admission")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"
#: Secret type -> the data key holding the config, and whether it is the legacy shape.
PULL_SECRET_TYPES = {
    DOCKER_CONFIG_JSON: (".dockerconfigjson", False),
    DOCKERCFG: (".dockercfg", True),
}

RBAC_HINT = (
    "give the webhook's ServiceAccount get on secrets and serviceaccounts (a ClusterRole with "
    'apiGroups [""], resources [secrets, serviceaccounts], verbs [get], and a '
    "ClusterRoleBinding to it)"
)

#: Objects per page of a list (kubectl's default chunk size).
LIST_PAGE_SIZE = 500


class KubernetesError(ResolveError):
    """The Kubernetes API could not be asked or refused; the message says what to fix."""


@dataclass(frozen=True)
class ClusterConfig:
    server: str
    token_file: Path
    #: None: the system's CAs.
    ca_file: Path | None

    @classmethod
    def in_cluster(
        cls,
        *,
        environ: Mapping[str, str] = os.environ,
        directory: Path = SERVICE_ACCOUNT_DIR,
    ) -> ClusterConfig:
        host = environ.get("KUBERNETES_SERVICE_HOST", "")
        port = environ.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise KubernetesError(
                "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and "
                "KUBERNETES_SERVICE_PORT are not set"
            )
        token, ca = directory / "token", directory / "ca.crt"
        for path in (token, ca):
            if not path.is_file():
                raise KubernetesError(
                    f"no ServiceAccount credentials at {path}: is automountServiceAccountToken "
                    "turned off for the webhook's pod?"
                )
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", token, ca)

    @classmethod
    def explicit(cls, server: str, token_file: Path, ca_file: Path | None = None) -> ClusterConfig:
        """An API server named by URL (``https://HOST:PORT``), reached with the bearer token in
        ``token_file``, trusting ``ca_file`` (or the system's CAs). The files must exist."""
        for path, what in ((token_file, "token file"), (ca_file, "CA file")):
            if path is not None and not path.is_file():
                raise KubernetesError(f"the Kubernetes API {what} {path} does not exist")
        return cls(server.rstrip("/"), token_file, ca_file)


def in_cluster(
    environ: Mapping[str, str] = os.environ, directory: Path = SERVICE_ACCOUNT_DIR
) -> bool:
    """True when the in-cluster configuration is there (for ``admission.kubernetes = "auto"``)."""
    try:
        ClusterConfig.in_cluster(environ=environ, directory=directory)
    except KubernetesError:
        return False
    return True


@dataclass(frozen=True)
class Secret:
    namespace: str
    name: str
    type: str
    #: Base64-decoded values.
    data: Mapping[str, bytes]


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    image_pull_secrets: tuple[str, ...]


def credentials_from_secret(secret: Secret) -> Credentials | None:
    """The registry credentials of a pull secret; None for other types of secret.

    Raises ``DocumentError`` for a pull secret whose content is not a Docker config.
    """
    kind = PULL_SECRET_TYPES.get(secret.type)
    if kind is None:
        return None
    key, legacy = kind
    payload = secret.data.get(key)
    source = f"pull secret {secret.namespace}/{secret.name}"
    if not payload:
        raise DocumentError(source, "", f"type {secret.type} but no {key} in its data")
    return parse_docker_config(payload, source, legacy=legacy)


def _secret(document: Mapping[str, Any], namespace: str, name: str) -> Secret:
    data: dict[str, bytes] = {}
    raw = document.get("data")
    for key, value in raw.items() if isinstance(raw, dict) else ():
        try:
            data[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            log.warning("secret %s/%s: data[%r] is not base64; ignored", namespace, name, key)
    kind = document.get("type")
    return Secret(namespace, name, kind if isinstance(kind, str) else "Opaque", data)


def _service_account(document: Mapping[str, Any], namespace: str, name: str) -> ServiceAccount:
    listed = document.get("imagePullSecrets")
    names = tuple(
        s["name"]
        for s in (listed if isinstance(listed, list) else ())
        if isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"]
    )
    return ServiceAccount(namespace, name, names)


@dataclass
class _Cached:
    document: dict[str, Any] | None
    expires: float


class KubeClient:
    """GETs Secrets and ServiceAccounts, lists objects; one ``aiohttp.ClientSession``, closed
    by ``close()``."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        cache_ttl: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self.clock = clock
        try:
            self._ssl = ssl.create_default_context(
                cafile=None if config.ca_file is None else str(config.ca_file)
            )
        except (OSError, ssl.SSLError) as exc:
            raise KubernetesError(
                f"cannot load the Kubernetes API's CA file {config.ca_file}: {exc}"
            ) from None
        self._session: aiohttp.ClientSession | None = None
        self._token_stamp: tuple[int, int, int] | None = None
        self._token = ""
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Task[dict[str, Any] | None]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_secret(self, namespace: str, name: str) -> Secret | None:
        """The secret, or None if it does not exist."""
        document = await self._get("secrets", namespace, name)
        return None if document is None else _secret(document, namespace, name)

    async def get_service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        """The service account (its ``imagePullSecrets``), or None if it does not exist."""
        document = await self._get("serviceaccounts", namespace, name)
        return None if document is None else _service_account(document, namespace, name)

    async def pull_secret_credentials(self, context: ResolveContext) -> list[Credentials]:
        """The credentials the kubelet would pull the workload's images with, in its order."""
        namespace = context.namespace
        if not namespace:
            return []
        names = list(context.pull_secrets)
        if not names:
            account_name = context.service_account or "default"
            account = await self.get_service_account(namespace, account_name)
            if account is None:
                log.warning("service account %s/%s not found", namespace, account_name)
            else:
                names = list(account.image_pull_secrets)
        names = list(dict.fromkeys(names))
        secrets = await asyncio.gather(*(self.get_secret(namespace, n) for n in names))
        found: list[Credentials] = []
        for name, secret in zip(names, secrets, strict=True):
            if secret is None:
                log.warning("imagePullSecret %s/%s not found; skipped", namespace, name)
                continue
            try:
                credentials = credentials_from_secret(secret)
            except DocumentError as exc:
                log.warning("%s; skipped", exc)
                continue
            if credentials is not None:
                found.append(credentials)
        return found

    async def list_objects(
        self, api_path: str, *, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every object the list endpoint ``api_path`` holds (``/api/v1/pods``,
        ``/apis/apps/v1/controllerrevisions``, ``/api/v1/namespaces/NS/pods``, ...), asked
        ``page_size`` at a time; uncached. The items of a list do not carry their kind.

        Nothing, with a warning, when the API server does not serve the resource (404).
        Raises ``KubernetesError`` otherwise: a 403 names the RBAC rule that is missing.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        token = ""
        while True:
            query = {"limit": str(page_size)} | ({"continue": token} if token else {})
            path = f"{api_path}?{urlencode(query)}"
            status, document = await self._request(path, refresh=False)
            if status == 401:  # the token may have been rotated since we read it
                status, document = await self._request(path, refresh=True)
            if status == 404 and not token:
                log.warning(
                    "the Kubernetes API at %s does not serve %s; not listed",
                    self.config.server,
                    _ListPath.parse(api_path).what,
                )
                return
            if status == 410 and token and _continue_token(document):
                # The first pages' snapshot is gone (etcd compacted): the rest comes from a
                # newer one, as the API server offers. Starting again might never end on a
                # large cluster; what changed in between was admitted in between (for the
                # inventory, the webhook's pins cover it).
                log.warning(
                    "listing %s took longer than the API server keeps its snapshot; "
                    "continuing from a newer one",
                    _listed(api_path),
                )
                token = _continue_token(document)
                continue
            if status != 200 or document is None:
                raise _list_error(status, document, api_path, self.config)
            items = document.get("items")
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict):
                    yield item
            token = _continue_token(document)
            if not token:
                return

    async def _get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{resource}/{quote(name, safe='')}"
        cached = self._cache.get(path)
        if cached is not None and cached.expires > self.clock():
            return cached.document
        task = self._inflight.get(path)
        if task is None:
            task = asyncio.ensure_future(self._fetch(path, resource, namespace, name))
            self._inflight[path] = task
            task.add_done_callback(self._done)
        # Shielded: a caller that gives up (its deadline) leaves the answer for the next one.
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[dict[str, Any] | None]) -> None:
        for path, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[path]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _fetch(
        self, path: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        status, document = await self._request(path, refresh=False)
        if status == 401:  # the token may have been rotated since we read it
            status, document = await self._request(path, refresh=True)
        if status == 404:
            document = None
        elif status != 200 or document is None:
            raise _error(status, document, resource, namespace, name, self.config)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[path] = _Cached(document, self.clock() + self.cache_ttl)
        return document

    async def _request(self, path: str, *, refresh: bool) -> tuple[int, dict[str, Any] | None]:
        headers = {"Authorization": f"Bearer {self._read_token(refresh)}"}
        headers["Accept"] = "application/json"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        try:
            async with self._session.get(self.config.server + path, headers=headers) as response:
                try:
                    document = await response.json(content_type=None)
                except ValueError:
                    document = None
                return response.status, document if isinstance(document, dict) else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise KubernetesError(
                f"cannot reach the Kubernetes API at {self.config.server}: {reason}"
            ) from None

    def _read_token(self, refresh: bool) -> str:
        path = self.config.token_file
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if refresh or stamp != self._token_stamp:
                self._token = path.read_text().strip()
                self._token_stamp = stamp
        except OSError as exc:
            raise KubernetesError(f"cannot read the token file {path}: {exc.strerror}") from None
        return self._token


def _error(
    status: int,
    document: Mapping[str, Any] | None,
    resource: str,
    namespace: str,
    name: str,
    config: ClusterConfig,
) -> KubernetesError:
    message = document.get("message") if document is not None else None
    detail = message if isinstance(message, str) and message else f"HTTP {status}"
    if status == 403:
        return KubernetesError(
            f"the webhook may not read {resource} in namespace {namespace} ({detail}): " + RBAC_HINT
        )
    if status == 401:
        return _unauthorized(config, detail)
    return KubernetesError(
        f"the Kubernetes API at {config.server} answered {status} for {resource} "
        f"{namespace}/{name}: {detail}"
    )


def _unauthorized(config: ClusterConfig, detail: str) -> KubernetesError:
    return KubernetesError(
        f"the Kubernetes API at {config.server} refused the webhook's ServiceAccount token "
        f"from {config.token_file} ({detail}): is it expired, revoked, or another cluster's?"
    )


def _continue_token(document: Mapping[str, Any] | None) -> str:
    metadata = document.get("metadata") if document is not None else None
    token = metadata.get("continue") if isinstance(metadata, dict) else None
    return token if isinstance(token, str) else ""


@dataclass(frozen=True)
class _ListPath:
    """What a list endpoint's path names: API group ("" for the core group), resource, and
    namespace (None: all of them)."""

    group: str
    resource: str
    namespace: str | None

    @classmethod
    def parse(cls, api_path: str) -> _ListPath:
        parts = [p for p in api_path.split("/") if p]
        group, rest = "", parts[2:]
        if parts[:1] == ["apis"] and len(parts) >= 3:
            group, rest = parts[1], parts[3:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        return cls(group, rest[0] if rest else api_path, namespace)

    @property
    def what(self) -> str:
        """``pods``, ``controllerrevisions (API group apps)``."""
        return self.resource + (f" (API group {self.group})" if self.group else "")

    @property
    def where(self) -> str:
        return "all namespaces" if self.namespace is None else f"namespace {self.namespace}"


def _listed(api_path: str) -> str:
    path = _ListPath.parse(api_path)
    return f"{path.what} in {path.where}"


def _list_error(
    status: int, document: Mapping[str, Any] | None, api_path: str, config: ClusterConfig
) -> KubernetesError:
    message = document.get("message") if document is not None else None
    detail = message if isinstance(message, str) and message else f"HTTP {status}"
    path = _ListPath.parse(api_path)
    if status == 403:
        group = path.group or '""'
        return KubernetesError(
            f"the webhook may not list {path.what} in {path.where} ({detail}): give the "
            f"webhook's ServiceAccount list on {path.resource} (a ClusterRole with apiGroups "
            f"[{group}], resources [{path.resource}], verbs [list], and a ClusterRoleBinding "
            "to it, as `moorage webhook manifests` prints them)"
        )
    if status == 401:
        return _unauthorized(config, detail)
    return KubernetesError(
        f"the Kubernetes API at {config.server} answered {status} for the list of "
        f"{_listed(api_path)}: {detail}"
    )
