"""The cluster inventory: the images of this registry the cluster uses now, as the admission
side last listed them (``moorage.admission.inventory``). Garbage collection keeps them."""

from __future__ import annotations

from collections.abc import Sequence

from moorage.meta.protocols import InventoryStore
from moorage.model import RunningImage


class Inventory:
    def __init__(self, meta: InventoryStore) -> None:
        self.meta = meta

    async def replace(self, images: Sequence[RunningImage], at: float) -> None:
        """Replace the inventory with what a listing at ``at`` found."""
        await self.meta.replace_inventory(images, at)

    async def current(self) -> tuple[float | None, list[RunningImage]]:
        """When the inventory was taken (None: never), and its images."""
        return await self.meta.inventory()
