"""Parsing /v2/ paths. Repository names contain slashes, so routes are split here, not by
the router: the name is everything before the last recognised endpoint suffix.

A reference that itself contains ``/`` (raw, or ``%2f`` which the server decodes first), as in
``blobs/sha256:ab/cd`` or ``blobs/uploads/../../x``, still names its endpoint: it is routed
there with the whole reference, so the client gets that resource's error (``DIGEST_INVALID``,
``BLOB_UPLOAD_UNKNOWN``, ``MANIFEST_INVALID``...) from the handler that validates it, never
"no such endpoint". The handlers never use a reference before validating it.
"""

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
#: Tried when ``_PATH_RE`` finds no endpoint: a reference running past a ``/``. The name is
#: the shortest prefix, so ``a/blobs/x/y`` is the blob ``x/y`` of ``a`` (no valid reference
#: contains ``/``, so it never takes a path that names a real endpoint).
_SLASHED_REFERENCE_RE = re.compile(
    r"(?P<name>.+?)/(?:"
    r"manifests/(?P<manifest>.+)"
    r"|blobs/uploads/(?P<upload>.+)"
    r"|blobs/(?P<blob>.+)"
    r"|referrers/(?P<referrers>.+)"
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
        return _slashed_reference(tail)
    name = match.group("name")
    for kind in ("manifest", "blob", "referrers", "extension"):
        value = match.group(kind)
        if value is not None:
            return Route(kind, name, value)
    upload = match.group("upload")
    if upload is not None:
        return Route("upload", name, upload) if upload else Route("uploads", name)
    return Route("tags", name)


def _slashed_reference(tail: str) -> Route | None:
    match = _SLASHED_REFERENCE_RE.fullmatch(tail)
    if match is None:
        return None
    kinds: tuple[Kind, ...] = ("manifest", "upload", "blob", "referrers")
    kind = next(k for k in kinds if match.group(k) is not None)
    return Route(kind, match.group("name"), match.group(kind))
