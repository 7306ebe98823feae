"""Registry credentials from Docker config files and Kubernetes pull secrets.

Three shapes are read: ``~/.docker/config.json`` and the ``.dockerconfigjson`` of a
``kubernetes.io/dockerconfigjson`` Secret (``{"auths": {KEY: ENTRY}}``), and the legacy
``.dockercfg`` (``{KEY: ENTRY}``). An ENTRY has ``auth`` (base64 of ``user:password``) or
``username`` and ``password``, and maybe ``identitytoken`` (an OAuth2 refresh token).
Entries with none of them (``docker login`` writes ``{}`` when a credential store holds the
secret) are skipped; ``credsStore`` and ``credHelpers`` name programs the webhook cannot run,
so they are only remembered, for error messages.

KEYs are matched the way the kubelet matches them: the scheme and a ``/v1/`` or ``/v2/``
prefix are dropped (``https://host:5000/v1/`` is ``host:5000``), the port must be equal,
``*`` globs match one DNS label (``*.example.com``), and a path (``host/team``) limits the
entry to repositories under it; more specific keys come first. The Docker Hub names
(``https://index.docker.io/v1/``, ``index.docker.io``, ``registry-1.docker.io``,
``docker.io``) all mean ``docker.io``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from moorage.documents import (
    SECRET,
    DocumentError,
    Invalid,
    key,
    located,
    parse_json,
    read,
    read_as,
)

log = logging.getLogger("moorage.admission")

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: Top-level keys of config.json other than ``auths``: a file with any of them is not legacy.
_CONFIG_KEYS = frozenset({"auths", "credsStore", "credHelpers", "HttpHeaders", "proxies"})


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """A user and password for one registry (and an OAuth2 refresh token, when given one)."""

    username: str
    password: str = field(repr=False)
    identity_token: str = field(default="", repr=False)

    def header(self) -> str:
        """The ``Authorization`` header value for HTTP basic auth."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True, slots=True)
class AuthEntry:
    """One key of a config: where it applies (``host`` may hold globs) and what it gives."""

    key: str
    host: str
    path: str
    auth: BasicAuth

    def matches(self, domain: str, path: str = "") -> bool:
        if not host_matches(self.host, normalize_host(domain)):
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")


@dataclass(frozen=True)
class Credentials:
    """The usable entries of one config file or secret; ``source`` names it for messages."""

    source: str
    entries: tuple[AuthEntry, ...] = ()
    #: Hosts whose credentials live in a credential helper or store the webhook cannot run.
    helper_hosts: frozenset[str] = frozenset()
    uses_store: bool = False

    def matching(self, domain: str, path: str = "") -> list[BasicAuth]:
        """Every entry for ``domain`` (and repository ``path``), the most specific first."""
        found = [e for e in self.entries if e.matches(domain, path)]
        found.sort(key=lambda e: ("*" in e.host, -len(e.path)))
        return [e.auth for e in found]

    def for_host(self, domain: str, path: str = "") -> BasicAuth | None:
        """The credentials to use for ``domain`` (and repository ``path``), or None."""
        found = self.matching(domain, path)
        return found[0] if found else None

    def helper_for(self, domain: str) -> bool:
        """True if a credential helper or store would have answered for ``domain``."""
        return self.uses_store or normalize_host(domain) in self.helper_hosts


def normalize_host(host: str) -> str:
    """Lowercase ``host[:port]``, with the Docker Hub aliases as ``docker.io``."""
    host = host.strip().lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def split_key(key: str) -> tuple[str, str]:
    """A config key as (host[:port], repository path prefix or "")."""
    rest = key.strip()
    scheme, sep, after = rest.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        rest = after
    host, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] in ("v1", "v2"):
        parts = parts[1:]
    return normalize_host(host), "/".join(parts)


def host_matches(pattern: str, host: str) -> bool:
    """``pattern`` (globs per DNS label) against ``host``; ports must be equal."""
    if "*" not in pattern:
        return pattern == host
    pattern_name, pattern_port = _split_port(pattern)
    name, port = _split_port(host)
    if pattern_port != port:
        return False
    labels, targets = pattern_name.split("."), name.split(".")
    return len(labels) == len(targets) and all(
        re.fullmatch(re.escape(p).replace(r"\*", "[^.]*"), t)
        for p, t in zip(labels, targets, strict=True)
    )


def _split_port(host: str) -> tuple[str, str]:
    head, sep, port = host.rpartition(":")
    if sep and port.isdigit() and not head.endswith(":"):
        return head, port
    return host, ""


def _decode_auth(value: str) -> tuple[str, str]:
    """``auth``: base64 of ``user:password``."""
    text = "".join(value.split())
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Invalid("not base64") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise Invalid("must be base64 of username:password (no ':' found)")
    return username, password


def _auth(value: str) -> None:
    if value:
        _decode_auth(value)


@dataclass(frozen=True)
class EntryDocument:
    """An entry of a Docker config, as written; other keys (``email``...) are ignored."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    auth: Annotated[str, SECRET, _auth] | None = None
    username: str | None = None
    password: Annotated[str, SECRET] | None = None
    identitytoken: Annotated[str, SECRET] | None = None

    def basic_auth(self) -> BasicAuth | None:
        """The credentials, or None for an entry without any (a credential store's)."""
        username, password = self.username or "", self.password or ""
        if self.auth:
            username, password = _decode_auth(self.auth)
        if not (username or password or self.identitytoken):
            return None
        return BasicAuth(username, password, self.identitytoken or "")


@dataclass(frozen=True)
class ConfigDocument:
    """``config.json`` and ``.dockerconfigjson``; other keys are ignored."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    auths: dict[str, EntryDocument] = field(default_factory=dict)
    creds_store: str | None = field(default=None, metadata=key("credsStore"))
    cred_helpers: dict[str, str] = field(default_factory=dict, metadata=key("credHelpers"))

    def verify(self) -> None:
        _entries(self.auths, "auths")


def _entries(table: Mapping[str, EntryDocument], *where: str) -> tuple[AuthEntry, ...]:
    found = []
    for name, document in table.items():
        auth = document.basic_auth()
        if auth is None:
            continue
        host, path = split_key(name)
        if not host:
            raise Invalid("the key names no registry host", *where, name)
        found.append(AuthEntry(name, host, path, auth))
    return tuple(found)


def parse_docker_config(
    data: bytes | str, source: str, *, legacy: bool | None = None
) -> Credentials:
    """Parse a config.json / ``.dockerconfigjson`` (``legacy=False``) or a ``.dockercfg``
    (``legacy=True``); None decides from the content. ``DocumentError`` names ``source``,
    the key and the fault."""
    document: dict[str, Any] = read_as(dict[str, Any], parse_json(data, source), source)
    if legacy is None:
        legacy = not _CONFIG_KEYS.intersection(document)
    if legacy:
        entries = read_as(dict[str, EntryDocument], document, source)
        try:
            return Credentials(source, _entries(entries))
        except Invalid as exc:
            raise located(source, exc) from None
    config = read(ConfigDocument, document, source)
    return Credentials(
        source,
        _entries(config.auths),
        frozenset(split_key(name)[0] for name in config.cred_helpers),
        bool(config.creds_store),
    )


def load_docker_config(path: Path) -> Credentials:
    """Read and parse a Docker config file; ``DocumentError`` says what is wrong."""
    source = f"docker config {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(source, "", f"cannot be read: {exc.strerror}") from None
    return parse_docker_config(data, source)


class DockerConfigFile:
    """A Docker config file re-read when it changes (a mounted Secret is updated in place).

    The first read raises ``DocumentError``; a later broken version is logged and the last
    good one kept.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self._credentials = load_docker_config(path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def __call__(self) -> Credentials:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._credentials = load_docker_config(self.path)
            except DocumentError as exc:
                log.warning("%s; still using the version read before", exc)
        return self._credentials
