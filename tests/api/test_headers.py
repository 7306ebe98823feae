"""moorage.api.v2.headers: Range, Content-Range with Content-Length, Content-Type and Accept
parsed into the plain values the registry takes."""

from __future__ import annotations

import pytest

from moorage import mediatypes as mt
from moorage.api.v2.headers import (
    ContentRange,
    accepts,
    byte_range,
    chunk_length,
    declared_media_type,
)
from moorage.errors import ErrorCode, RegistryError


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=90-1000", (90, 99)),
        (" bytes=5-5 ", (5, 5)),
        # Not one simple byte range: the whole blob.
        ("bytes=-", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_byte_range(header: str, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=9-8", "bytes=200-300"])
def test_byte_range_outside_the_blob(header: str) -> None:
    with pytest.raises(RegistryError) as info:
        byte_range(header, 100)
    assert info.value.code is ErrorCode.RANGE_INVALID
    assert info.value.headers == {"Content-Range": "bytes */100"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0-9", ContentRange(0, 9)),
        ("bytes 10-19/100", ContentRange(10, 19)),
        ("bytes=10-19/*", ContentRange(10, 19)),
        (" 5-5 ", ContentRange(5, 5)),
    ],
)
def test_content_range(header: str, expected: ContentRange) -> None:
    assert ContentRange.parse(header) == expected


@pytest.mark.parametrize("header", ["", "5-4", "0-", "-9", "bytes 0-9/x", "a-b"])
def test_invalid_content_range(header: str) -> None:
    with pytest.raises(RegistryError) as info:
        ContentRange.parse(header)
    assert (info.value.code, info.value.status) == (ErrorCode.BLOB_UPLOAD_INVALID, 416)


def test_chunk_length() -> None:
    assert chunk_length(None, None) is None
    assert chunk_length(None, 7) == 7
    assert chunk_length(ContentRange(10, 19), None) == 10
    assert chunk_length(ContentRange(10, 19), 10) == 10
    with pytest.raises(RegistryError) as info:
        chunk_length(ContentRange(10, 19), 9)
    assert (info.value.code, info.value.status) == (ErrorCode.BLOB_UPLOAD_INVALID, 416)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (" ; charset=utf-8", None),
        (mt.OCI_MANIFEST, mt.OCI_MANIFEST),
        (f"{mt.OCI_MANIFEST}; charset=utf-8", mt.OCI_MANIFEST),
        ("Application/JSON", "application/json"),
    ],
)
def test_declared_media_type(header: str | None, expected: str | None) -> None:
    assert declared_media_type(header) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, True),
        ("", True),
        ("*/*", True),
        (f"{mt.DOCKER_MANIFEST}, {mt.OCI_MANIFEST};q=0.9", True),
        (mt.DOCKER_MANIFEST, False),
        ("application/*", True),
    ],
)
def test_accepts(accept: str | None, expected: bool) -> None:
    assert accepts(accept, mt.OCI_MANIFEST) is expected
