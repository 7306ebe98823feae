from __future__ import annotations

import hashlib

import pytest

from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError

SHA256 = hashlib.sha256(b"x").hexdigest()
SHA512 = hashlib.sha512(b"x").hexdigest()


def test_parse_valid() -> None:
    assert str(Digest.parse(f"sha256:{SHA256}")) == f"sha256:{SHA256}"
    assert Digest.parse(f"sha512:{SHA512}").algorithm == "sha512"
    assert Digest.of(b"x") == Digest("sha256", SHA256)
    assert Digest.of(b"x", "sha512") == Digest("sha512", SHA512)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        f"sha256:{SHA256[:-1]}",
        f"sha256:{SHA256.upper()}",
        f"sha512:{SHA256}",
        f"md5:{SHA256}",
        "sha256:../../etc/passwd",
        f"sha256:{SHA256}/..",
        f"SHA256:{SHA256}",
    ],
)
def test_parse_invalid(value: str) -> None:
    with pytest.raises(RegistryError) as info:
        Digest.parse(value)
    assert info.value.code is ErrorCode.DIGEST_INVALID
