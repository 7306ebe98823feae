"""Repository names and tags, validated by the grammar of the OCI distribution spec."""

from __future__ import annotations

import re

from moorage.errors import ErrorCode, RegistryError

_NAME_RE = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

#: Distribution's limit on the length of a repository name.
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"repository name is longer than {MAX_NAME_LENGTH} characters",
        )
    if _NAME_RE.fullmatch(name) is None:
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"invalid repository name {name[:100]!r}: use lowercase path components of "
            "[a-z0-9] separated by '.', '_', '__' or '-', joined by '/'",
        )
    return name


def is_valid_tag(tag: str) -> bool:
    return _TAG_RE.fullmatch(tag) is not None


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"invalid tag {tag[:140]!r}: up to 128 characters of [a-zA-Z0-9_.-], "
            "not starting with '.' or '-'",
        )
    return tag


def split_tagged(reference: str) -> tuple[str, str]:
    """``team/app:today`` -> (``team/app``, ``today``), both validated; ValueError otherwise."""
    name, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        raise ValueError(f"expected REPOSITORY:TAG, not {reference!r}")
    try:
        return validate_name(name), validate_tag(tag)
    except RegistryError as exc:
        raise ValueError(exc.message) from None
