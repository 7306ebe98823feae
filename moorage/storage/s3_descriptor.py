"""Descriptors: the small JSON objects that make a logical key out of immutable segments.

A descriptor lists segment objects in order. Each entry names the segment and how many of its
leading bytes belong to the key (``length``); ``size`` is how many bytes the segment object
holds. A writer that resumes at an offset inside a segment keeps a shorter prefix of it
instead of rewriting it, so ``length`` may be less than ``size``.

``moved_to`` lists the keys this descriptor was committed to while it still existed (a commit
interrupted between creating its target and deleting its source). Segments that one of those
targets references belong to the target, and are never deleted through this descriptor.

Pure code: encoding, decoding, truncation and mapping byte ranges onto segments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from moorage.storage.base import StorageError

#: Object metadata (``x-amz-meta-*``) that marks a descriptor and carries the logical size,
#: so that ``stat`` is one HEAD request.
KIND = "moorage-kind"
SIZE = "moorage-size"
COMPOSITE = "composite"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    #: Bytes of the segment that belong to the key (a prefix of the object).
    length: int
    #: Bytes the segment object holds.
    size: int


@dataclass(frozen=True, slots=True)
class Descriptor:
    segments: tuple[Segment, ...] = ()
    moved_to: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(segment.length for segment in self.segments)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(segment.id for segment in self.segments)

    def truncated(self, offset: int) -> tuple[Descriptor, list[str]]:
        """The descriptor cut at ``offset`` bytes, and the ids of the segments it no longer
        references at all. A segment straddling ``offset`` is kept as a shorter prefix."""
        if offset < 0 or offset > self.size:
            raise StorageError(f"cannot truncate {self.size} bytes at {offset}")
        kept: list[Segment] = []
        dropped: list[str] = []
        position = 0
        for segment in self.segments:
            if position >= offset:
                dropped.append(segment.id)
            elif position + segment.length > offset:
                kept.append(replace(segment, length=offset - position))
            else:
                kept.append(segment)
            position += segment.length
        return replace(self, segments=tuple(kept)), dropped

    def appended(self, segment: Segment) -> Descriptor:
        return replace(self, segments=(*self.segments, segment))

    def moving_to(self, target: str) -> Descriptor:
        if target in self.moved_to:
            return self
        return replace(self, moved_to=(*self.moved_to, target))

    def ranges(self, offset: int, length: int | None) -> list[tuple[str, int, int]]:
        """(segment id, start, end exclusive) for the bytes [offset, offset + length)."""
        end = self.size if length is None else min(self.size, offset + length)
        spans: list[tuple[str, int, int]] = []
        position = 0
        for segment in self.segments:
            low, high = max(offset, position), min(end, position + segment.length)
            if low < high:
                spans.append((segment.id, low - position, high - position))
            position += segment.length
            if position >= end:
                break
        return spans

    def metadata(self) -> dict[str, str]:
        return {KIND: COMPOSITE, SIZE: str(self.size)}

    def encode(self) -> bytes:
        document: dict[str, object] = {
            "moorage": VERSION,
            "size": self.size,
            "segments": [[s.id, s.length, s.size] for s in self.segments],
        }
        if self.moved_to:
            document["moved_to"] = list(self.moved_to)
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, key: str) -> Descriptor:
        try:
            document = json.loads(data)
            if document["moorage"] != VERSION:
                raise ValueError(f"version {document['moorage']}")
            segments = tuple(
                Segment(str(id_), int(length), int(size))
                for id_, length, size in document["segments"]
            )
            moved_to = tuple(str(target) for target in document.get("moved_to", ()))
            descriptor = cls(segments, moved_to)
            if any(not 0 <= s.length <= s.size for s in segments):
                raise ValueError("a segment length is out of range")
            if descriptor.size != document["size"]:
                raise ValueError("size does not match the segments")
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"corrupt descriptor at {key}: {exc}") from exc
        return descriptor


def is_composite(attributes: dict[str, str]) -> bool:
    return attributes.get(KIND) == COMPOSITE


def composite_size(attributes: dict[str, str], key: str) -> int:
    try:
        return int(attributes[SIZE])
    except (KeyError, ValueError):
        raise StorageError(f"descriptor at {key} has no valid {SIZE} metadata") from None
