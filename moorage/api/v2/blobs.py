"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import contextlib
import logging
import re

from aiohttp import web

from moorage.api.v2.common import API_HEADERS, actor
from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.registry.service import Registry

log = logging.getLogger("moorage.api")

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _blob_headers(digest: Digest) -> dict[str, str]:
    return {
        **API_HEADERS,
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (start, end inclusive); None to send the whole blob."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    if match.group(1):
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
    else:
        start, end = max(0, size - int(match.group(2))), size - 1
    if start >= size or end < start:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            f"range {header[:60]!r} is outside the blob's {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, min(end, size - 1)


async def get_blob(
    request: web.Request, registry: Registry, name: str, ref: str
) -> web.StreamResponse:
    digest = Digest.parse(ref)
    size = await registry.blobs.size(name, digest)
    headers = _blob_headers(digest)
    if request.method == "GET" and registry.download_redirect is not None:
        url = await registry.storage.download_url(
            registry.blobs.key(digest), registry.download_redirect
        )
        if url is not None:
            # Clients follow it with their Range header; the store serves the bytes.
            headers.pop("Cache-Control")
            return web.Response(status=307, headers={**headers, "Location": url})
    # Unsatisfiable ranges are refused in the OCI error format; a Range header that is not
    # one simple byte range is ignored (RFC 9110 allows it) and the whole blob is sent.
    range_header = request.headers.get("Range")
    byte_range = parse_range(range_header, size) if range_header else None
    start, end = byte_range if byte_range else (0, size - 1)
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.content_length = end - start + 1
    await response.prepare(request)
    if request.method != "HEAD" and size:
        chunks = registry.storage.read(registry.blobs.key(digest), start, end - start + 1)
        sent = 0
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await response.write(chunk)
                    sent += len(chunk)
        except ConnectionError:
            # The client went away (closed, reset): a normal event, not a server failure.
            registry.blobs.counters.client_aborts += 1
            log.info(
                "client aborted the download of %s from %s after %d of %d bytes",
                digest,
                name,
                sent,
                end - start + 1,
            )
            return response
    await response.write_eof()
    return response


async def delete_blob(
    request: web.Request, registry: Registry, name: str, ref: str
) -> web.StreamResponse:
    await registry.delete_blob(name, Digest.parse(ref), actor(request))
    return web.Response(status=202, headers={**API_HEADERS, "Content-Length": "0"})
