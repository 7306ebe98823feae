"""Settings: defaults, overridden by a TOML config file, then MOORAGE_* variables, then flags.

The settings are sections, each owned by the module that uses it and mirroring a table of
the config file: ``[storage]`` and ``[storage.s3]`` (``moorage/storage/settings.py``),
``[metadata]`` (``moorage/meta/settings.py``), ``[uploads]``, ``[manifests]``, ``[delete]``,
``[mount]``, ``[gc]`` (``moorage/registry/settings.py``), ``[auth]`` (``moorage/api/settings.py``),
``[admission]`` (``moorage/admission/settings.py``), ``[policy]`` (``moorage/policy.py``),
``[metrics]`` (``moorage/metrics.py``), and here the server's own: ``listen``, ``data``,
``workers``, ``[tls]``, ``[log]``, ``[webhook]``.

One naming rule links the sources: the TOML key ``ttl`` in section ``[uploads]`` is the
setting ``settings.uploads.ttl`` and the variable ``MOORAGE_UPLOADS_TTL``; the few flags say
which setting they set (``moorage.cli.SETTING_OPTIONS``: ``--storage`` is ``storage.driver``).
Everything is read by ``moorage.documents``: a mistake is a ``DocumentError`` naming where the
value came from (the config file, the variable, the option), its key and the problem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from moorage.addresses import split_address
from moorage.admission.settings import AdmissionSettings
from moorage.api.settings import AuthSettings
from moorage.documents import (
    DocumentError,
    Invalid,
    Text,
    Where,
    at_least,
    keys,
    parse_toml,
    read_text,
)
from moorage.documents import read as read_document
from moorage.meta.settings import MetadataSettings
from moorage.metrics import MetricsSettings
from moorage.policy import PolicySettings
from moorage.registry.settings import (
    CollectionSettings,
    DeleteSettings,
    ManifestSettings,
    MountSettings,
    UploadSettings,
)
from moorage.storage.settings import StorageSettings

__all__ = ["DocumentError", "Settings", "load_settings", "settings_from"]


def _address(address: str) -> None:
    split_address(address)


def _log_level(level: str) -> None:
    if level not in logging.getLevelNamesMapping():
        names = ", ".join(sorted(logging.getLevelNamesMapping()))
        raise Invalid(f"expected a level name ({names}), not {level!r}")


@dataclass(frozen=True)
class TLSSettings:
    #: PEM certificate chain and private key: the registry (and the webhooks) serve HTTPS.
    cert: Path | None = None
    key: Path | None = None

    def verify(self) -> None:
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise Invalid("missing (tls.cert and tls.key must be given together)", missing)


@dataclass(frozen=True)
class LogSettings:
    #: Log every request (off by default: it costs throughput).
    access: bool = False
    level: Annotated[str, _log_level] = "INFO"


@dataclass(frozen=True)
class WebhookSettings:
    #: Also serve the admission webhooks (HTTPS, with tls.cert and tls.key) on this HOST:PORT.
    listen: Annotated[str, _address] | None = None


@dataclass(frozen=True)
class Settings:
    #: Address the registry listens on.
    listen: Annotated[str, _address] = "127.0.0.1:5000"
    #: Directory for blobs and the SQLite database (embedded default).
    data: Path = Path("./data")
    #: Worker processes sharing the listening port and the data directory.
    workers: Annotated[int, at_least(1)] = 2
    tls: TLSSettings = field(default_factory=TLSSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    metadata: MetadataSettings = field(default_factory=MetadataSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    manifests: ManifestSettings = field(default_factory=ManifestSettings)
    delete: DeleteSettings = field(default_factory=DeleteSettings)
    mount: MountSettings = field(default_factory=MountSettings)
    gc: CollectionSettings = field(default_factory=CollectionSettings)
    log: LogSettings = field(default_factory=LogSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    #: The tag policy the config file declares (``[policy]``); none leaves the policy in the
    #: metadata store as it is.
    policy: PolicySettings = field(default_factory=PolicySettings)

    def verify(self) -> None:
        """Rules across sections."""
        if self.storage.driver == "memory":
            if self.workers != 1:
                raise Invalid(
                    "the memory storage driver cannot be shared: use workers = 1",
                    "storage",
                    "driver",
                )
            if self.metadata.backend == "postgres":
                raise Invalid(
                    "the memory storage driver keeps its metadata in memory too",
                    "metadata",
                    "backend",
                )
        if self.webhook.listen is not None and self.tls.cert is None:
            raise Invalid(
                "the admission webhooks are served over HTTPS only: give tls.cert and tls.key "
                "(moorage certs makes them)",
                "webhook",
                "listen",
            )

    @property
    def host(self) -> str:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]

    @property
    def database(self) -> Path:
        return self.data / "moorage.db"


#: The variable of each setting: ``MOORAGE_`` and its path in upper case, joined by ``_``.
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "MOORAGE_" + "_".join(path).upper(): path for path in keys(Settings)
}


def _put(table: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        inner = table.setdefault(name, {})
        if not isinstance(inner, dict):
            return  # the config file has a value where a section goes: that is reported
        table = inner
    table[path[-1]] = value


def _leaves(table: Mapping[str, Any], prefix: Where = ()) -> list[Where]:
    found: list[Where] = []
    for name, value in table.items():
        path = (*prefix, name)
        found += _leaves(value, path) if isinstance(value, Mapping) else [path]
    return found


def settings_from(
    table: Mapping[str, Any],
    source: str = "settings",
    origins: Mapping[Where, str] | None = None,
) -> Settings:
    """Settings from a table shaped as the config file (sections as tables).

    ``origins`` names where values came from, by key path; an error names the origin of
    its key (or of a key beside it, for a missing one), or else ``source``.
    """
    known = dict(origins or {})

    def origin(where: Where) -> str:
        for end in range(len(where), 0, -1):
            if where[:end] in known:
                return known[where[:end]]
        for end in range(len(where) - 1, 0, -1):  # a missing key: where its section was set
            for path, name in known.items():
                if path[:end] == where[:end]:
                    return name
        return source

    return read_document(Settings, table, origin)


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    override_sources: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then ``config_file``, then ``MOORAGE_*`` variables of ``env`` (default: the
    process's), then ``overrides`` (dotted keys such as ``storage.driver``; None values are
    left out). ``override_sources`` names where an override came from (``option --storage``).
    ``DocumentError`` says what is wrong, where."""
    table: dict[str, Any] = {}
    origins: dict[Where, str] = {}
    if config_file is not None:
        source = f"config file {config_file}"
        table = parse_toml(read_text(config_file, source), source)
        origins.update(dict.fromkeys(_leaves(table), source))
    for name, value in (os.environ if env is None else env).items():
        path = ENVIRONMENT.get(name)
        if path is not None:
            _put(table, path, Text(value))
            origins[path] = f"environment variable {name}"
    for name, value in (overrides or {}).items():
        if value is not None:
            path = tuple(name.split("."))
            _put(table, path, value)
            origins[path] = (override_sources or {}).get(name, "command line")
    return settings_from(table, "settings", origins)
