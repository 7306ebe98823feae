"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web

from moorage.api.v2.common import API_HEADERS, SENT_KEY, actor
from moorage.api.v2.headers import byte_range
from moorage.digest import Digest
from moorage.registry.service import Registry

log = logging.getLogger("moorage.api")


def _blob_headers(digest: Digest) -> dict[str, str]:
    return {
        **API_HEADERS,
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


async def get_blob(
    request: web.Request, registry: Registry, name: str, ref: str
) -> web.StreamResponse:
    digest = Digest.parse(ref)
    size = await registry.blobs.size(name, digest)
    headers = _blob_headers(digest)
    if request.method == "GET":
        url = await registry.blobs.download_url(digest)
        if url is not None:
            # Clients follow it with their Range header; the store serves the bytes.
            headers.pop("Cache-Control")
            return web.Response(status=307, headers={**headers, "Location": url})
    # Unsatisfiable ranges are refused in the OCI error format; a Range header that is not
    # one simple byte range is ignored (RFC 9110 allows it) and the whole blob is sent.
    range_header = request.headers.get("Range")
    requested = byte_range(range_header, size) if range_header else None
    start, end = requested if requested else (0, size - 1)
    if requested:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206 if requested else 200, headers=headers)
    response.content_length = end - start + 1
    await response.prepare(request)
    if request.method != "HEAD" and size:
        chunks = registry.blobs.read(digest, start, end - start + 1)
        sent = 0
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await response.write(chunk)
                    sent += len(chunk)
        except ConnectionError:
            # The client went away (closed, reset): a normal event, not a server failure.
            registry.blobs.counters.client_aborts += 1
            request[SENT_KEY] = sent
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
