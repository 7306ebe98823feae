"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from moorage.sizes import human_size

__all__ = ["human_size", "short", "table"]


def short(digest: str | None, width: int = 19) -> str:
    """``sha256:0123456789ab`` — enough to tell digests apart in a table."""
    if not digest:
        return "-"
    return digest if len(digest) <= width else digest[:width]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)
