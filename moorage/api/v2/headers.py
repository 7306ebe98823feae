"""Parsing the request headers the /v2/ handlers read, into the plain values the registry takes.

- ``Range`` of a blob GET: ``byte_range`` (a start and an inclusive end);
- ``Content-Range`` and ``Content-Length`` of an upload chunk: ``ContentRange`` and
  ``chunk_length`` (where the chunk starts, how many bytes its body holds);
- ``Content-Type`` of a manifest push: ``declared_media_type``;
- ``Accept`` of a manifest GET: ``accepts``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moorage.errors import ErrorCode, RegistryError

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range of a blob of ``size`` bytes as (start, end inclusive); None to
    send the whole blob (a header that is not one simple byte range, which RFC 9110 lets a
    server ignore). RANGE_INVALID (416) if the range lies outside the blob."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    if match.group(1):
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
    else:
        start, end = max(0, size - int(match.group(2))), size - 1
    if start >= size or end < start:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            f"range {header[:60]!r} is outside the blob's {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, min(end, size - 1)


@dataclass(frozen=True, slots=True)
class ContentRange:
    """The ``Content-Range`` of an upload chunk: its first and last byte in the upload."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @classmethod
    def parse(cls, value: str) -> ContentRange:
        match = _CONTENT_RANGE_RE.fullmatch(value.strip())
        if match is None or int(match.group(2)) < int(match.group(1)):
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                f"invalid Content-Range {value[:100]!r}: expected '<start>-<end>'",
                status=416,
            )
        return cls(int(match.group(1)), int(match.group(2)))


def chunk_length(content_range: ContentRange | None, content_length: int | None) -> int | None:
    """How many bytes an upload request's body must hold, from its Content-Range and
    Content-Length (None: as many as it brings); 416 if the two disagree."""
    if content_range is None:
        return content_length
    if content_length is not None and content_length != content_range.length:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f"Content-Range covers {content_range.length} bytes but Content-Length "
            f"is {content_length}",
            status=416,
        )
    return content_range.length


def declared_media_type(content_type: str | None) -> str | None:
    """The media type a ``Content-Type`` header names, lowercased, without its parameters;
    None for no header or an empty one."""
    return (content_type or "").split(";", 1)[0].strip().lower() or None


def accepts(accept_header: str | None, media_type: str) -> bool:
    """Whether a client's ``Accept`` header admits a stored manifest's media type.

    No header, ``*/*`` or ``application/*`` admit anything; otherwise the type must be listed.
    """
    if not accept_header:
        return True
    for item in accept_header.split(","):
        value = item.split(";", 1)[0].strip().lower()
        if value in ("*/*", "application/*", media_type):
            return True
    return False
