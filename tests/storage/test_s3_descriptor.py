"""The S3 driver's descriptors: cutting, appending, mapping ranges, encoding (pure code)."""

from __future__ import annotations

import pytest

from moorage.storage.base import StorageError
from moorage.storage.s3_descriptor import Descriptor, Segment, composite_size, is_composite

THREE = Descriptor((Segment("a", 4, 4), Segment("b", 3, 10), Segment("c", 5, 5)))


def test_size_counts_used_bytes_only() -> None:
    assert THREE.size == 12
    assert THREE.ids == {"a", "b", "c"}
    assert Descriptor().size == 0


@pytest.mark.parametrize(
    ("offset", "kept", "dropped"),
    [
        (12, [("a", 4), ("b", 3), ("c", 5)], []),
        (9, [("a", 4), ("b", 3), ("c", 2)], []),
        (7, [("a", 4), ("b", 3)], ["c"]),
        (5, [("a", 4), ("b", 1)], ["c"]),
        (4, [("a", 4)], ["b", "c"]),
        (0, [], ["a", "b", "c"]),
    ],
)
def test_truncated(offset: int, kept: list[tuple[str, int]], dropped: list[str]) -> None:
    cut, gone = THREE.truncated(offset)
    assert [(s.id, s.length) for s in cut.segments] == kept
    assert gone == dropped
    assert cut.size == offset


def test_truncated_past_the_end_fails() -> None:
    with pytest.raises(StorageError):
        THREE.truncated(13)


def test_ranges() -> None:
    assert THREE.ranges(0, None) == [("a", 0, 4), ("b", 0, 3), ("c", 0, 5)]
    assert THREE.ranges(3, 2) == [("a", 3, 4), ("b", 0, 1)]
    assert THREE.ranges(4, 3) == [("b", 0, 3)]
    assert THREE.ranges(6, 100) == [("b", 2, 3), ("c", 0, 5)]
    assert THREE.ranges(12, None) == []
    assert THREE.ranges(5, 0) == []


def test_encoding_round_trip_and_metadata() -> None:
    moved = THREE.moving_to("blobs/x").moving_to("blobs/x")
    assert moved.moved_to == ("blobs/x",)
    assert Descriptor.decode(moved.encode(), "k") == moved
    assert Descriptor.decode(Descriptor().encode(), "k") == Descriptor()
    metadata = THREE.metadata()
    assert is_composite(metadata)
    assert composite_size(metadata, "k") == 12
    assert not is_composite({})


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        b'{"moorage": 2, "size": 0, "segments": []}',
        b'{"moorage": 1, "size": 5, "segments": [["a", 4, 4]]}',
        b'{"moorage": 1, "size": 4, "segments": [["a", 4]]}',
        b'{"moorage": 1, "size": 5, "segments": [["a", 5, 4]]}',
    ],
)
def test_corrupt_descriptors_are_storage_errors(data: bytes) -> None:
    with pytest.raises(StorageError, match="corrupt descriptor at k"):
        Descriptor.decode(data, "k")


def test_missing_size_metadata_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        composite_size({"moorage-kind": "composite"}, "k")
