"""Image references parsed the way Docker and containerd parse them.

``nginx`` is ``docker.io/library/nginx:latest``; the first path component is a registry host
only if it contains ``.`` or ``:`` or is ``localhost``; ``host:5000/app`` keeps its port;
``app:1.0@sha256:...`` carries both a tag and a digest, and the digest is what is pulled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moorage.digest import Digest
from moorage.errors import RegistryError

DOCKER_HUB = "docker.io"
_LEGACY_HUB_HOSTS = frozenset({"index.docker.io", "registry-1.docker.io"})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_MAX_NAME = 255


class ReferenceError(ValueError):
    """Not an image reference; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageReference:
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    def with_digest(self, digest: str) -> str:
        """The reference pinned to ``digest``, keeping the tag for people to read."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository}{tag}@{digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain in _LEGACY_HUB_HOSTS:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse_reference(text: str, *, default_tag: str = "latest") -> ImageReference:
    """Parse and normalise; a reference with neither tag nor digest gets ``default_tag``."""
    value = text.strip()
    if not value or value != text:
        raise ReferenceError(f"invalid image reference {text!r}: empty or padded with spaces")
    name, at, digest_text = value.partition("@")
    digest = None
    if at:
        try:
            digest = str(Digest.parse(digest_text))
        except RegistryError as exc:
            raise ReferenceError(f"invalid image reference {text!r}: {exc.message}") from None
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceError(f"invalid image reference {text!r}: bad tag {tag!r}")
    domain, path = _split_domain(name)
    if not _DOMAIN_RE.fullmatch(domain):
        raise ReferenceError(f"invalid image reference {text!r}: bad registry host {domain!r}")
    if not _PATH_RE.fullmatch(path):
        raise ReferenceError(
            f"invalid image reference {text!r}: repository names are lowercase "
            "[a-z0-9] components separated by '.', '_', '__' or '-'"
        )
    if len(domain) + 1 + len(path) > _MAX_NAME:
        raise ReferenceError(f"invalid image reference {text!r}: name longer than {_MAX_NAME}")
    if tag is None and digest is None:
        tag = default_tag
    return ImageReference(domain, path, tag, digest)
