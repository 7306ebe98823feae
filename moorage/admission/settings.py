"""The ``[admission]`` settings: how the webhooks resolve images, and what they refuse.

``[[admission.immutable_remote_tags]]`` are policy rules without ``mode`` (immutable) for
other registries' tags; ``[[admission.validation.rules]]`` are the validating webhook's rules
(``moorage.admission.validation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from moorage.admission.validation import RuleDocument, ValidationRule, unique_rule_names
from moorage.documents import Invalid, at_least
from moorage.policy import Mode, Policy, RuleFields, unique_names


@dataclass(frozen=True, kw_only=True)
class ImmutableTagsRule(RuleFields):
    """Tags of other registries that never move; ``repositories`` are ``host/path``."""

    mode: Mode = "immutable"


@dataclass(frozen=True)
class ValidationSettings:
    #: The validating webhook's rules (``[[admission.validation.rules]]``).
    rules: tuple[RuleDocument, ...] = ()

    def verify(self) -> None:
        unique_rule_names(self.rules, "rules")

    def parsed(self) -> tuple[ValidationRule, ...]:
        return tuple(rule.rule() for rule in self.rules)


@dataclass(frozen=True)
class AdmissionSettings:
    #: Registry hosts that mean "this registry" in image references (resolved locally, from
    #: the metadata store). The listen address and its localhost forms are always included.
    registry_hosts: tuple[str, ...] = ()
    #: An image that cannot be resolved: "deny" the object, or "warn" and admit it unpinned.
    on_failure: Literal["deny", "warn"] = "deny"
    #: Seconds allowed for resolving a review's images (keep well under timeoutSeconds).
    deadline: float = 5.0
    #: Seconds a mutable tag's digest from another registry is cached.
    cache_ttl: float = 10.0
    #: Docker config file with credentials for other registries.
    docker_config: Path | None = None
    #: Other registries reached over plain HTTP.
    insecure_registries: tuple[str, ...] = ()
    #: CA bundle for other registries' TLS (default: the system's).
    ca_file: Path | None = None
    #: Read workloads' imagePullSecrets through the Kubernetes API: "auto" (when running in a
    #: cluster, or when ``kubernetes_api`` is set), "on" or "off".
    kubernetes: Literal["auto", "on", "off"] = "auto"
    #: The Kubernetes API server's URL (https://HOST:PORT), for webhooks running outside the
    #: cluster (in a pod, the in-cluster configuration is used when this is not set).
    kubernetes_api: str | None = None
    #: With ``kubernetes_api``: a file holding the bearer token to send (re-read when it
    #: changes), e.g. a ServiceAccount token from ``kubectl create token``.
    kubernetes_token_file: Path | None = None
    #: With ``kubernetes_api``: the CA of the API server's certificate (default: the
    #: system's CAs).
    kubernetes_ca_file: Path | None = None
    #: Seconds between inventories of this registry's images the cluster uses (garbage
    #: collection keeps them), read through the Kubernetes API by the webhooks' first
    #: worker; 0: none.
    inventory_interval: Annotated[float, at_least(0)] = 300.0
    #: Resolve images of other registries at all (off: only this registry's images are pinned).
    remote: bool = True
    #: Tags of other registries that never move, cached for good once resolved
    #: (``[[admission.immutable_remote_tags]]``: ``repositories`` as host/path, ``tags``).
    immutable_remote_tags: tuple[ImmutableTagsRule, ...] = ()
    validation: ValidationSettings = field(default_factory=ValidationSettings)

    def verify(self) -> None:
        unique_names(self.immutable_remote_tags, "immutable_remote_tags")
        self._verify_kubernetes_api()

    def _verify_kubernetes_api(self) -> None:
        """``kubernetes_api`` is an https URL, given with its token file; the token and CA
        files are only used with it."""
        api = self.kubernetes_api
        if api is None:
            for name in ("kubernetes_token_file", "kubernetes_ca_file"):
                if getattr(self, name) is not None:
                    raise Invalid(
                        "used with admission.kubernetes_api (the Kubernetes API server's "
                        "https:// URL): set that too",
                        name,
                    )
            return
        try:
            parts = urlsplit(api)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "https" or not parts.hostname or parts.query:
            raise Invalid(
                f"must be the API server's URL, https://HOST:PORT, not {api!r}", "kubernetes_api"
            )
        if self.kubernetes_token_file is None:
            raise Invalid(
                "missing (admission.kubernetes_api needs a file holding the token to send: "
                "kubectl create token SERVICEACCOUNT makes one)",
                "kubernetes_token_file",
            )

    def immutable_tags(self) -> Policy:
        """Which tags of other registries never move (their digests are cached for good):
        the rules matched against host/path and tag, in a policy whose default is mutable."""
        rules = self.immutable_remote_tags
        return Policy(tuple(rule.rule(index, rule.mode) for index, rule in enumerate(rules, 1)))
