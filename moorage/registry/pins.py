"""Pins: what the pinning webhook resolved images to, where and when."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from moorage.meta.protocols import PinStore
from moorage.model import PinRecord


class Pins:
    def __init__(self, meta: PinStore) -> None:
        self.meta = meta

    async def record(self, pins: Sequence[PinRecord]) -> None:
        await self.meta.record_pins(pins)

    async def list(
        self,
        namespace: str | None,
        repository: str | None,
        tag: str | None,
        limit: int | None,
        before: int | None,
    ) -> builtins.list[PinRecord]:
        """Pins matching the filters that are given, newest first, with ids below ``before``."""
        return await self.meta.list_pins(namespace, repository, tag, limit, before)
