"""Building the admission webhooks from settings: resolvers, credentials, rules.

Which hosts count as "this registry": the ``admission.registry_hosts`` setting, plus the
listen address and its localhost forms, so images pushed to this registry are always resolved
from its own metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from moorage.addresses import split_address
from moorage.admission.credentials import Credentials, DockerConfigFile
from moorage.admission.inventory import keep_inventory
from moorage.admission.kube import ClusterConfig, KubeClient, in_cluster
from moorage.admission.mutate import Pinner
from moorage.admission.remote import RemoteResolver
from moorage.admission.resolver import CachingResolver, LocalResolver, RoutingResolver
from moorage.admission.review import AdmissionRequest, AdmissionResponse
from moorage.admission.settings import AdmissionSettings
from moorage.admission.validation import local_tag_mode, validate
from moorage.registry.service import Registry

#: The remote resolver's own timeout stays under the pinner's deadline, so users see the
#: registry's answer ("unauthorized", "connection refused") rather than a generic timeout.
_REMOTE_SHARE = 0.8


class Settings(Protocol):
    """What the webhooks read of the registry's settings: its listen address (images
    written with it are this registry's) and the ``[admission]`` section."""

    @property
    def listen(self) -> str: ...

    @property
    def admission(self) -> AdmissionSettings: ...


def own_hosts(settings: Settings) -> frozenset[str]:
    host, port = split_address(settings.listen)
    written = f"[{host}]" if ":" in host else host  # as image references write IPv6 hosts
    hosts = {*settings.admission.registry_hosts, f"{written}:{port}"}
    if host in ("0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):
        hosts |= {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    return frozenset(hosts)


@dataclass
class Admission:
    pinner: Pinner
    validator: Callable[[AdmissionRequest], Awaitable[AdmissionResponse]]
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Takes the cluster inventory for ever (one process runs it), or None without a
    #: Kubernetes API or with ``admission.inventory_interval`` 0.
    inventory: Callable[[], Coroutine[Any, Any, None]] | None = None

    async def close(self) -> None:
        await self.pinner.drain()
        for close in self._closers:
            await close()


def cluster_config(settings: Settings) -> ClusterConfig | None:
    """Where to read pull secrets: the API server ``admission.kubernetes_api`` names, or the
    in-cluster one (when running in a pod, or required by ``kubernetes = "on"``); None when
    the Kubernetes API is not used. Raises ``KubernetesError`` when it cannot be."""
    admission = settings.admission
    if admission.kubernetes == "off":
        return None
    if admission.kubernetes_api is not None:
        assert admission.kubernetes_token_file is not None  # the settings check it
        return ClusterConfig.explicit(
            admission.kubernetes_api, admission.kubernetes_token_file, admission.kubernetes_ca_file
        )
    if admission.kubernetes == "on" or in_cluster():
        return ClusterConfig.in_cluster()
    return None


def _remote(settings: Settings, closers: list[Callable[[], Awaitable[None]]]) -> RemoteResolver:
    credentials: Callable[[], Credentials] | None = None
    if settings.admission.docker_config is not None:
        credentials = DockerConfigFile(settings.admission.docker_config)
    config = cluster_config(settings)
    secrets_for = None
    if config is not None:
        kube = KubeClient(config)
        closers.append(kube.close)
        secrets_for = kube.pull_secret_credentials
    remote = RemoteResolver(
        credentials=credentials,
        secrets_for=secrets_for,
        insecure_hosts=frozenset(settings.admission.insecure_registries),
        ca_file=settings.admission.ca_file,
        timeout=settings.admission.deadline * _REMOTE_SHARE,
    )
    closers.append(remote.close)
    return remote


def build_admission(settings: Settings, registry: Registry) -> Admission:
    rules = settings.admission.validation.parsed()
    hosts = own_hosts(settings)
    closers: list[Callable[[], Awaitable[None]]] = []
    remote = _remote(settings, closers) if settings.admission.remote else None
    policies = registry.policies

    resolver = CachingResolver(
        RoutingResolver(LocalResolver(registry.manifests, hosts), remote),
        immutable=settings.admission.immutable_tags(),
        ttl=settings.admission.cache_ttl,
    )
    pinner = Pinner(
        resolver,
        registry.pins.record,
        on_failure=settings.admission.on_failure,
        deadline=settings.admission.deadline,
    )

    async def validator(request: AdmissionRequest) -> AdmissionResponse:
        state = await policies.current()
        return validate(
            request,
            rules,
            local_tag_mode(state.policy, hosts),
            old_object=request.old_object or None,
        )

    return Admission(pinner, validator, closers, _inventory(settings, registry, hosts, closers))


def _inventory(
    settings: Settings,
    registry: Registry,
    hosts: frozenset[str],
    closers: list[Callable[[], Awaitable[None]]],
) -> Callable[[], Coroutine[Any, Any, None]] | None:
    config = cluster_config(settings)
    interval = settings.admission.inventory_interval
    if config is None or not interval:
        return None
    kube = KubeClient(config)
    closers.append(kube.close)
    return partial(keep_inventory, kube, hosts, registry.inventory.replace, interval)
