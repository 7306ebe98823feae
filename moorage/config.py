"""Settings: defaults, overridden by a TOML config file, then MOORAGE_* variables, then flags.

One naming rule links the three sources: the TOML key ``ttl`` in section ``[uploads]`` is the
setting ``uploads_ttl``, the variable ``MOORAGE_UPLOADS_TTL`` and the flag ``--uploads-ttl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moorage.admission.validation import RuleError, parse_rules
from moorage.policy import Policy, PolicyError


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    #: Address the registry listens on.
    listen: str = "127.0.0.1:5000"
    #: Directory for blobs and the SQLite database (embedded default).
    data: Path = field(default_factory=lambda: Path("./data"))
    #: Worker processes sharing the listening port and the data directory.
    workers: int = 2
    #: Storage driver: "filesystem" (under ``data``), "s3" (``[storage.s3]``), or "memory"
    #: (one process only).
    storage_driver: str = "filesystem"
    #: S3-compatible object storage: endpoint URL, region, bucket and credentials.
    storage_s3_endpoint: str | None = None
    storage_s3_region: str = "us-east-1"
    storage_s3_bucket: str | None = None
    storage_s3_access_key: str | None = None
    storage_s3_secret_key: str | None = None
    #: Address buckets as ``endpoint/bucket`` (most self-hosted stores) instead of
    #: ``bucket.endpoint`` (virtual-hosted style).
    storage_s3_path_style: bool = True
    #: Prefix of every key moorage stores in the bucket (several registries can share one).
    storage_s3_prefix: str = ""
    #: Send blob downloads to a presigned URL of the object store (307) instead of streaming
    #: them through the registry, when the clients can reach the store; seconds it is valid.
    storage_s3_redirect: bool = False
    storage_s3_redirect_expiry: float = 1200.0
    #: The store's URL as clients reach it, for redirects (default: the endpoint).
    storage_s3_public_endpoint: str | None = None
    #: PEM file of CA certificates to trust for an https:// endpoint, besides the system's
    #: (a store behind a private CA).
    storage_s3_ca_file: Path | None = None
    #: Metadata backend: "sqlite" (``data``/moorage.db, the embedded default) or "postgres".
    metadata_backend: str = "sqlite"
    #: PostgreSQL connection string (``postgresql://user:password@host:port/database``).
    metadata_dsn: str | None = None
    #: Connections each worker process keeps open to PostgreSQL at most.
    metadata_pool_size: int = 10
    #: Bring the PostgreSQL schema up to date when the registry starts (otherwise run
    #: ``moorage migrate`` first; the registry refuses an outdated schema).
    metadata_migrate: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: htpasswd file with bcrypt entries; enables HTTP basic auth when set.
    auth_htpasswd: Path | None = None
    #: With auth enabled, let anonymous clients pull.
    auth_anonymous_pull: bool = False
    #: With auth enabled, the users who may change the tag policy.
    auth_admins: list[str] = field(default_factory=list)
    #: Allow DELETE of manifests, tags and blobs.
    delete_enabled: bool = True
    #: Mount a blob the registry already holds when a client asks without ``from``.
    mount_automatic: bool = True
    #: Seconds an idle upload session lives.
    uploads_ttl: float = 24 * 3600.0
    #: Seconds an upload stays locked to a request writing to it; renewed every third of that
    #: while it writes. A lease whose process died on this host is taken over at once; one
    #: held by a replica that died elsewhere, once it runs out.
    uploads_lease: float = 30.0
    #: Bytes of an upload between durable checkpoints while a request streams into it (0:
    #: none, else at least 64 KiB): where the upload resumes if the request never finishes.
    uploads_checkpoint: int = 64 * 1024 * 1024
    #: Largest manifest accepted, in bytes.
    manifests_max_size: int = 4 * 1024 * 1024
    #: Log every request (off by default: it costs throughput).
    log_access: bool = False
    log_level: str = "INFO"
    #: Also serve the admission webhooks (HTTPS, with tls_cert/tls_key) on this HOST:PORT.
    webhook_listen: str | None = None
    #: Registry hosts that mean "this registry" in image references (resolved locally, from
    #: the metadata store). The listen address and its localhost forms are always included.
    admission_registry_hosts: list[str] = field(default_factory=list)
    #: An image that cannot be resolved: "deny" the object, or "warn" and admit it unpinned.
    admission_on_failure: str = "deny"
    #: Seconds allowed for resolving a review's images (keep well under timeoutSeconds).
    admission_deadline: float = 5.0
    #: Seconds a mutable tag's digest from another registry is cached.
    admission_cache_ttl: float = 10.0
    #: Docker config file with credentials for other registries.
    admission_docker_config: Path | None = None
    #: Other registries reached over plain HTTP.
    admission_insecure_registries: list[str] = field(default_factory=list)
    #: CA bundle for other registries' TLS (default: the system's).
    admission_ca_file: Path | None = None
    #: Read workloads' imagePullSecrets through the Kubernetes API: "auto" (when running in a
    #: cluster, or when ``admission_kubernetes_api`` is set), "on" or "off".
    admission_kubernetes: str = "auto"
    #: The Kubernetes API server's URL (https://HOST:PORT), for webhooks running outside the
    #: cluster (in a pod, the in-cluster configuration is used when this is not set).
    admission_kubernetes_api: str | None = None
    #: With ``admission_kubernetes_api``: a file holding the bearer token to send (re-read
    #: when it changes), e.g. a ServiceAccount token from ``kubectl create token``.
    admission_kubernetes_token_file: Path | None = None
    #: With ``admission_kubernetes_api``: the CA of the API server's certificate (default:
    #: the system's CAs).
    admission_kubernetes_ca_file: Path | None = None
    #: Resolve images of other registries at all (off: only this registry's images are pinned).
    admission_remote: bool = True
    #: Tags of other registries that never move, cached for good once resolved
    #: (``[[admission.immutable_remote_tags]]``: ``repositories`` as host/path, ``tags``).
    admission_immutable_remote_tags: list[dict[str, Any]] = field(default_factory=list)
    #: Validating webhook rules (``[[admission.validation.rules]]``).
    admission_validation_rules: list[dict[str, Any]] = field(default_factory=list)
    #: Tag policy from the config file (``[policy]`` with ``default`` and ``[[policy.rules]]``).
    #: None leaves the policy in the metadata store as it is.
    policy_default: str | None = None
    policy_rules: list[dict[str, Any]] | None = None

    @property
    def host(self) -> str:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]

    @property
    def database(self) -> Path:
        return self.data / "moorage.db"

    def immutable_remote_tags(self) -> Policy:
        """Which tags of other registries never move (their digests are cached for good):
        ``[[admission.immutable_remote_tags]]`` rules, matched against host/path and tag."""
        try:
            rules = [{"mode": "immutable", **rule} for rule in self.admission_immutable_remote_tags]
            return Policy.from_dict({"default": "mutable", "rules": rules})
        except (PolicyError, TypeError) as exc:
            raise ConfigError(f"invalid admission.immutable_remote_tags: {exc}") from None

    def configured_policy(self) -> Policy | None:
        """The policy the configuration declares, or None if it declares none."""
        if self.policy_default is None and self.policy_rules is None:
            return None
        try:
            return Policy.from_dict(
                {"default": self.policy_default or "mutable", "rules": self.policy_rules or []}
            )
        except PolicyError as exc:
            raise ConfigError(f"invalid [policy]: {exc}") from None


#: Settings that are lists of tables (``[[...]]``) and must not be flattened further.
_TABLE_LISTS = frozenset(
    {"policy_rules", "admission_validation_rules", "admission_immutable_remote_tags"}
)


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    """Convert a value from TOML, the environment or a flag to the setting's type."""
    kind = _FIELDS[name].type
    if value is None:
        return None
    try:
        if kind in ("bool",):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind in ("Path", "Path | None"):
            return Path(str(value)) if str(value) else None
        if kind.startswith("list["):
            if isinstance(value, str):
                # From the environment: JSON, or for a list of names, comma-separated.
                value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
            if not isinstance(value, list):
                raise ValueError(value)
            if kind == "list[str]":
                return [str(item).strip() for item in value if str(item).strip()]
            return value
        return str(value)
    except ValueError:  # json.JSONDecodeError included
        raise ConfigError(f"invalid value {value!r} for setting {name} ({kind})") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}".replace("-", "_")
        if isinstance(value, dict) and name not in _TABLE_LISTS:
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def _check_kubernetes_api(settings: Settings) -> None:
    """``admission.kubernetes_api`` is an https URL, given with its token file; the token and
    CA files are only used with it."""
    api = settings.admission_kubernetes_api
    if api is None:
        for name in ("token_file", "ca_file"):
            if getattr(settings, f"admission_kubernetes_{name}") is not None:
                raise ConfigError(
                    f"admission.kubernetes_{name} is used with admission.kubernetes_api "
                    "(the Kubernetes API server's https:// URL): set that too"
                )
        return
    try:
        parts = urlsplit(api)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.query:
        raise ConfigError(
            f"admission.kubernetes_api must be the API server's URL, https://HOST:PORT, not {api!r}"
        )
    if settings.admission_kubernetes_token_file is None:
        raise ConfigError(
            "admission.kubernetes_api needs admission.kubernetes_token_file: a file holding "
            "the token to send (kubectl create token SERVICEACCOUNT makes one)"
        )


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as handle:
                table = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        for name, value in _flatten(table).items():
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {name!r} in {config_file}")
            values[name] = _coerce(name, value)
    for key, value in (os.environ if env is None else env).items():
        if key.startswith("MOORAGE_"):
            name = key[len("MOORAGE_") :].lower()
            if name in _FIELDS:
                values[name] = _coerce(name, value)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    settings = Settings(**values)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    if settings.workers < 1:
        raise ConfigError("workers must be at least 1")
    if settings.uploads_checkpoint != 0 and settings.uploads_checkpoint < 64 * 1024:
        raise ConfigError("uploads.checkpoint must be 0 (none) or at least 65536 bytes")
    if settings.uploads_lease <= 0:
        raise ConfigError("uploads.lease must be a positive number of seconds")
    if settings.storage_driver not in ("filesystem", "memory", "s3"):
        raise ConfigError(f"unknown storage driver {settings.storage_driver!r}")
    if settings.storage_driver == "memory" and settings.workers != 1:
        raise ConfigError("the memory storage driver cannot be shared: use workers = 1")
    if settings.storage_driver == "s3":
        for name in ("endpoint", "bucket", "access_key", "secret_key"):
            if not getattr(settings, f"storage_s3_{name}"):
                raise ConfigError(f"the s3 storage driver needs storage.s3.{name}")
    if settings.metadata_backend not in ("sqlite", "postgres"):
        raise ConfigError(f"unknown metadata backend {settings.metadata_backend!r}")
    if settings.metadata_backend == "postgres":
        if not settings.metadata_dsn:
            raise ConfigError("the postgres metadata backend needs metadata.dsn")
        if settings.storage_driver == "memory":
            raise ConfigError("the memory storage driver keeps its metadata in memory too")
    if settings.metadata_pool_size < 1:
        raise ConfigError("metadata.pool_size must be at least 1")
    settings.port  # noqa: B018 - validates listen
    if settings.webhook_listen is not None:
        split_address(settings.webhook_listen)
    settings.configured_policy()  # validates [policy]
    settings.immutable_remote_tags()  # validates [[admission.immutable_remote_tags]]
    try:
        parse_rules(settings.admission_validation_rules)
    except RuleError as exc:
        raise ConfigError(f"invalid [admission.validation]: {exc}") from None
    if settings.admission_on_failure not in ("deny", "warn"):
        raise ConfigError("admission.on_failure must be 'deny' or 'warn'")
    if settings.admission_kubernetes not in ("auto", "on", "off"):
        raise ConfigError("admission.kubernetes must be 'auto', 'on' or 'off'")
    _check_kubernetes_api(settings)
    if settings.webhook_listen is not None and settings.tls_cert is None:
        raise ConfigError(
            "the admission webhooks are served over HTTPS only: give tls_cert and tls_key "
            "(moorage certs makes them)"
        )
    return settings
