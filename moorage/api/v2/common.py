"""Helpers shared by the /v2/ handlers."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from moorage.api.errors import API_VERSION_HEADER
from moorage.errors import ErrorCode, RegistryError

API_HEADERS = {API_VERSION_HEADER[0]: API_VERSION_HEADER[1]}


def pagination(request: web.Request) -> tuple[int | None, str | None]:
    """The ``n`` and ``last`` query parameters."""
    raw = request.query.get("n")
    limit: int | None = None
    if raw is not None and raw != "":
        if not raw.isdigit() or len(raw) > 9:
            raise RegistryError(
                ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a non-negative integer: {raw!r}"
            )
        limit = int(raw)
    last = request.query.get("last") or None
    return limit, last


def next_link(path: str, limit: int, last: str) -> str:
    return f'<{path}?last={quote(last, safe="")}&n={limit}>; rel="next"'


def content_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise RegistryError(ErrorCode.SIZE_INVALID, f"invalid Content-Length {raw[:40]!r}")
    return int(raw)
