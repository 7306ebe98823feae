from __future__ import annotations

import pytest

from moorage.errors import ErrorCode, RegistryError
from moorage.names import is_valid_tag, validate_name


@pytest.mark.parametrize("name", ["a", "library/alpine", "a-b/c.d/e__f", "x1/y--2", "a" * 255])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "-a", "a_", "a___b", "a" * 256]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as info:
        validate_name(name)
    assert info.value.code is ErrorCode.NAME_INVALID


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "_x", "A" * 128, "1.0-rc_1"])
def test_valid_tags(tag: str) -> None:
    assert is_valid_tag(tag)


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a/b", "a:b", "A" * 129, "sha256"[:0]])
def test_invalid_tags(tag: str) -> None:
    assert not is_valid_tag(tag)
