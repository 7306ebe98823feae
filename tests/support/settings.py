"""Settings for tests, written as the config file's tables and read as it is (checked alike)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moorage.config import Settings, settings_from


def merged(*tables: Mapping[str, Any]) -> dict[str, Any]:
    """The tables merged, later ones winning, sections merged key by key."""
    out: dict[str, Any] = {}
    for table in tables:
        for key, value in table.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            elif isinstance(value, Mapping):
                out[key] = merged(value)
            else:
                out[key] = value
    return out


def make_settings(*tables: Mapping[str, Any], **values: Any) -> Settings:
    """Settings from tables shaped as the config file (``storage={"driver": "s3"}``), merged
    in order, then ``values``."""
    return settings_from(merged(*tables, values), "test settings")
