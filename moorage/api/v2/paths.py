"""Parsing /v2/ paths. Repository names contain slashes, so routes are split here, not by
the router: the name is everything before the last recognised endpoint suffix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["manifest", "blob", "uploads", "upload", "tags", "referrers", "catalog", "extension"]

_EXTENSION = r"_oci/ext/discover|_moorage/[a-z0-9]+(?:/[a-z0-9]+)?"

_PATH_RE = re.compile(
    r"(?P<name>.+?)/(?:"
    r"manifests/(?P<manifest>[^/]+)"
    r"|blobs/uploads/?(?P<upload>[^/]*)"
    r"|blobs/(?P<blob>[^/]+)"
    r"|tags/list"
    r"|referrers/(?P<referrers>[^/]+)"
    rf"|(?P<extension>{_EXTENSION})"
    r")"
)
_REGISTRY_EXTENSION_RE = re.compile(_EXTENSION)


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    #: Repository name; "" for registry-level endpoints (catalog, registry extensions).
    name: str
    #: Tag or digest (manifest), digest (blob, referrers), upload id (upload), extension
    #: path such as "_moorage/tags/history" (extension); else "".
    reference: str = ""

    @property
    def endpoint(self) -> str:
        """What selects the handler, with the method."""
        if self.kind == "extension":
            return f"{'repository' if self.name else 'registry'} {self.reference}"
        return self.kind


def parse_path(tail: str) -> Route | None:
    """Split the part of a path after ``/v2/``; None if it names no endpoint."""
    if tail == "_catalog":
        return Route("catalog", "")
    if _REGISTRY_EXTENSION_RE.fullmatch(tail):
        return Route("extension", "", tail)
    match = _PATH_RE.fullmatch(tail)
    if match is None:
        return None
    name = match.group("name")
    for kind in ("manifest", "blob", "referrers", "extension"):
        value = match.group(kind)
        if value is not None:
            return Route(kind, name, value)
    upload = match.group("upload")
    if upload is not None:
        return Route("upload", name, upload) if upload else Route("uploads", name)
    return Route("tags", name)
