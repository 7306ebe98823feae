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
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("moorage.admission")

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: Top-level keys of config.json other than ``auths``: a file with any of them is not legacy.
_CONFIG_KEYS = frozenset({"auths", "credsStore", "credHelpers", "HttpHeaders", "proxies"})


class CredentialsError(ValueError):
    """A credentials file or secret that cannot be read; the message names it and the fault."""


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


def _text(entry: dict[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{where}.{name} must be a string")
    return value


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    text = "".join(value.split())
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{where}.auth is not base64") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise CredentialsError(f"{where}.auth must be base64 of username:password (no ':' found)")
    return username, password


def _entry(key: str, value: Any, where: str) -> AuthEntry | None:
    if not isinstance(value, dict):
        raise CredentialsError(f"{where} must be an object")
    username = _text(value, "username", where)
    password = _text(value, "password", where)
    auth = _text(value, "auth", where)
    token = _text(value, "identitytoken", where)
    if auth:
        username, password = _decode_auth(auth, where)
    if not (username or password or token):
        return None
    host, path = split_key(key)
    if not host:
        raise CredentialsError(f"{where}: the key names no registry host")
    return AuthEntry(key, host, path, BasicAuth(username, password, token))


def _entries(table: dict[str, Any], where: str) -> tuple[AuthEntry, ...]:
    found = []
    for key, value in table.items():
        entry = _entry(key, value, f"{where}[{key!r}]")
        if entry is not None:
            found.append(entry)
    return tuple(found)


def parse_docker_config(
    data: bytes | str, source: str, *, legacy: bool | None = None
) -> Credentials:
    """Parse a config.json / ``.dockerconfigjson`` (``legacy=False``) or a ``.dockercfg``
    (``legacy=True``); None decides from the content. Raises ``CredentialsError``."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CredentialsError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CredentialsError(f"{source}: expected a JSON object")
    if legacy is None:
        legacy = not _CONFIG_KEYS.intersection(document)
    try:
        if legacy:
            return Credentials(source, _entries(document, "entry"))
        auths = document.get("auths", {})
        if not isinstance(auths, dict):
            raise CredentialsError("auths must be an object")
        helpers = document.get("credHelpers")
        store = document.get("credsStore")
        return Credentials(
            source,
            _entries(auths, "auths"),
            frozenset(split_key(k)[0] for k in helpers)
            if isinstance(helpers, dict)
            else frozenset(),
            isinstance(store, str) and bool(store),
        )
    except CredentialsError as exc:
        raise CredentialsError(f"{source}: {exc}") from None


def load_docker_config(path: Path) -> Credentials:
    """Read and parse a Docker config file; ``CredentialsError`` says what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read docker config {path}: {exc.strerror}") from None
    return parse_docker_config(data, f"docker config {path}")


class DockerConfigFile:
    """A Docker config file re-read when it changes (a mounted Secret is updated in place).

    The first read raises ``CredentialsError``; a later broken version is logged and the last
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
            except CredentialsError as exc:
                log.warning("%s; still using the version read before", exc)
        return self._credentials
