"""Helpers shared by the /v2/ handlers."""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

from aiohttp import web

from moorage.api.errors import API_VERSION_HEADER
from moorage.errors import ClientDisconnected, ErrorCode, RegistryError
from moorage.model import Actor

API_HEADERS = {API_VERSION_HEADER[0]: API_VERSION_HEADER[1]}

#: Where the dispatcher leaves the authenticated user (None: anonymous) for the handlers.
USER_KEY = web.RequestKey("user", str)
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


ACTOR_KEY = web.RequestKey("actor", Actor)
#: Body bytes a streamed response really sent, when it stopped short of its Content-Length
#: (the client went away): what the dispatcher counts instead.
SENT_KEY = web.RequestKey("sent", int)


def actor(request: web.Request) -> Actor:
    """Who makes a change: user, client address, and the request id (the client's, if sane).

    Kept on the request, so that an error response can carry the request id too.
    """
    if ACTOR_KEY in request:
        return request[ACTOR_KEY]
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
    made = Actor(request.get(USER_KEY), request.remote or "unknown", request_id)
    request[ACTOR_KEY] = made
    return made


def pagination(request: web.Request) -> tuple[int | None, str | None]:
    """The ``n`` and ``last`` query parameters."""
    raw = request.query.get("n")
    limit: int | None = None
    if raw is not None and raw != "":
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise RegistryError(
                ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a non-negative integer: {raw!r}"
            )
        limit = int(raw)
    last = request.query.get("last") or None
    return limit, last


def next_link(path: str, limit: int, last: str, extra: dict[str, str] | None = None) -> str:
    query = "".join(f"{k}={quote(v, safe='')}&" for k, v in (extra or {}).items())
    return f'<{path}?{query}last={quote(last, safe="")}&n={limit}>; rel="next"'


def content_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise RegistryError(ErrorCode.SIZE_INVALID, f"invalid Content-Length {raw[:40]!r}")
    return int(raw)


class RequestBody:
    """The request body, chunk by chunk as it arrives (``async for``), counting the bytes.

    A client that goes away mid-body makes aiohttp raise ``ConnectionResetError`` from the
    read ("Connection lost" when the connection closed, the socket's error when it was reset;
    plain TCP and TLS alike), and the handler is not cancelled: that becomes
    ``ClientDisconnected``, a normal event rather than a server failure. (An iterator of its
    own rather than an async generator: one call less per chunk.)
    """

    __slots__ = ("_read", "received")

    def __init__(self, request: web.Request) -> None:
        self._read = request.content.readany
        self.received = 0

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._read()
        except ConnectionError as exc:
            raise ClientDisconnected(self.received) from exc
        if not chunk:
            raise StopAsyncIteration
        self.received += len(chunk)
        return chunk


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """The whole request body, refused with 413 once it grows past ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(what, limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in RequestBody(request):
        total += len(chunk)
        if total > limit:
            raise _too_large(what, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, limit: int) -> RegistryError:
    code = ErrorCode.MANIFEST_INVALID if what == "manifest" else ErrorCode.SIZE_INVALID
    return RegistryError(code, f"{what} exceeds the limit of {limit} bytes", status=413)
