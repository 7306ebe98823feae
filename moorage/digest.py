"""Digests: parsing, validation and the algorithms the registry accepts (sha256, sha512)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from moorage.errors import ErrorCode, RegistryError

#: Algorithm name -> length of its lowercase hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and validate ``algorithm:hex``; raise DIGEST_INVALID (or UNSUPPORTED) otherwise."""
        match = _DIGEST_RE.fullmatch(value)
        if match is None:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest {value[:150]!r}")
        algorithm, encoded = match.group(1), match.group(2)
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm!r}; use one of: " + ", ".join(ALGORITHMS),
            )
        if len(encoded) != length or not _is_lower_hex(encoded):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"invalid {algorithm} digest: expected {length} lowercase hex characters",
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def is_digest(value: str) -> bool:
    """True if ``value`` looks like a digest (has an algorithm prefix), valid or not."""
    return ":" in value


_HEX = frozenset("0123456789abcdef")


def _is_lower_hex(value: str) -> bool:
    return all(c in _HEX for c in value)
