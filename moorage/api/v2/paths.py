"""Parsing /v2/ paths. Repository names contain slashes, so routes are split here, not by
the router: the name is everything before the last recognised endpoint suffix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["manifest", "blob", "uploads", "upload", "tags", "referrers"]

_PATH_RE = re.compile(
    r"^(?P<name>.+?)/(?:"
    r"manifests/(?P<manifest>[^/]+)"
    r"|blobs/uploads/?(?P<upload>[^/]*)"
    r"|blobs/(?P<blob>[^/]+)"
    r"|tags/list"
    r"|referrers/(?P<referrers>[^/]+)"
    r")$"
)


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    name: str
    #: Tag or digest (manifest), digest (blob, referrers), upload id (upload); else "".
    reference: str = ""


def parse_path(tail: str) -> Route | None:
    """Split the part of a path after ``/v2/``; None if it names no endpoint."""
    match = _PATH_RE.fullmatch(tail)
    if match is None:
        return None
    name = match.group("name")
    for kind in ("manifest", "blob", "referrers"):
        value = match.group(kind)
        if value is not None:
            return Route(kind, name, value)
    upload = match.group("upload")
    if upload is not None:
        return Route("upload", name, upload) if upload else Route("uploads", name)
    return Route("tags", name)
