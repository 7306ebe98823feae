"""Timestamps as the API and the CLI show and accept them: ISO 8601 in UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def format_time(timestamp: float) -> str:
    """``2026-05-12T10:00:00.123Z``"""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ago(seconds: float) -> str:
    """A duration as a listing shows it: ``42 s``, ``5 min``, ``3 h``, ``2 d``."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def parse_time(text: str) -> float:
    """ISO 8601 (``2026-05-12T10:00Z``, an offset, or none meaning UTC; a date alone is its
    midnight) or Unix seconds. Raises ValueError with a message for anything else, including
    times that cannot be shown back (before year 1 or after year 9999)."""
    seconds = _parse(text)
    try:
        format_time(seconds)
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"time {text[:60]!r} is out of range") from None
    return seconds


def _parse(text: str) -> float:
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"invalid time {text[:60]!r}: use ISO 8601 such as 2026-05-12T10:00Z, or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):
        raise ValueError(f"time {text[:60]!r} is out of range") from None
