"""/v2/<name>/blobs/uploads/: start (POST, with mount or digest), PATCH, PUT, GET, DELETE.

**Where an upload is.** Every session response carries ``Upload-Offset: <bytes received>``
(the name the IETF resumable-upload draft gives it), which is never ambiguous, and the spec's
``Range: 0-<end>``, whose end is the last byte received: ``0-<offset - 1>``. An empty upload has
no last byte, and clients disagree on how to say so (distribution-spec issues 577 and 578):

- the answers a resuming client reads, the status GET and a 416 for a chunk that does not
  start where the upload ends, say exactly where the upload is, ``0--1`` when it is empty.
  regclient continues at end + 1 (``0--1``: at byte 0; ``0-0`` would make it skip a byte
  and get a 416), zot answers ``0--1`` on GET too, and the spec's conformance suite reads the
  end with Go's ``Atoi``, which takes ``-1``.
- the 202 answers to POST and PATCH keep ``0-0`` for an empty upload, as CNCF Distribution
  does everywhere: Docker's client parses them with ``%d-%d`` and rejects an end before the
  start ("bad range format: 0--1"). A 202 to a PATCH is empty only after an empty chunk.
"""

from __future__ import annotations

from aiohttp import web

from moorage.api.v2.common import API_HEADERS, RequestBody, content_length
from moorage.api.v2.headers import ContentRange, chunk_length
from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.model import Upload
from moorage.names import validate_name
from moorage.registry.service import Registry


def _session_headers(name: str, upload_id: str, offset: int, *, exact: bool) -> dict[str, str]:
    """``exact``: an empty upload is ``Range: 0--1`` (else ``0-0``); see the module docstring."""
    end = offset - 1 if exact else max(offset - 1, 0)
    return {
        **API_HEADERS,
        "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "Range": f"0-{end}",
        "Upload-Offset": str(offset),
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _session_response(status: int, name: str, upload: Upload, *, exact: bool) -> web.Response:
    headers = _session_headers(name, upload.id, upload.offset, exact=exact)
    return web.Response(status=status, headers=headers)


def _created(name: str, digest: Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={
            **API_HEADERS,
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


def _digest_param(request: web.Request) -> Digest:
    value = request.query.get("digest")
    if not value:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required")
    return Digest.parse(value)


def _chunk(request: web.Request) -> tuple[int | None, int | None]:
    """Where the request's chunk starts in the upload (None: at its end, wherever that is),
    and how many bytes its body holds (None: as many as it brings)."""
    value = request.headers.get("Content-Range")
    content_range = None if value is None else ContentRange.parse(value)
    length = chunk_length(content_range, content_length(request))
    return (None if content_range is None else content_range.start), length


async def start_upload(
    request: web.Request, registry: Registry, name: str, automatic_mount: bool
) -> web.StreamResponse:
    mount = request.query.get("mount")
    if mount:
        digest = Digest.parse(mount)
        source = request.query.get("from")
        if source is not None:
            validate_name(source)
        mountable = source is not None or automatic_mount
        if mountable and await registry.blobs.mount(name, digest, source) is not None:
            return _created(name, digest)
    if "digest" in request.query:
        digest = _digest_param(request)
        await registry.uploads.monolithic(
            name, digest, RequestBody(request), length=content_length(request)
        )
        return _created(name, digest)
    upload = await registry.uploads.start(name)
    return _session_response(202, name, upload, exact=False)


async def upload_status(
    request: web.Request, registry: Registry, name: str, upload_id: str
) -> web.StreamResponse:
    upload = await registry.uploads.status(name, upload_id)
    return _session_response(204, name, upload, exact=True)


async def patch_upload(
    request: web.Request, registry: Registry, name: str, upload_id: str
) -> web.StreamResponse:
    start, length = _chunk(request)
    upload = await registry.uploads.append(
        name, upload_id, RequestBody(request), start=start, length=length
    )
    return _session_response(202, name, upload, exact=False)


async def put_upload(
    request: web.Request, registry: Registry, name: str, upload_id: str
) -> web.StreamResponse:
    digest = _digest_param(request)
    start, length = _chunk(request)
    await registry.uploads.finish(
        name, upload_id, digest, RequestBody(request), start=start, length=length
    )
    return _created(name, digest)


async def cancel_upload(
    request: web.Request, registry: Registry, name: str, upload_id: str
) -> web.StreamResponse:
    await registry.uploads.cancel(name, upload_id)
    return web.Response(status=204, headers=API_HEADERS)


def out_of_order_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
    """Headers for a 416 on a chunk: where the upload really is, so the client can resume."""
    headers = _session_headers(name, upload_id, offset, exact=True)
    del headers["Content-Length"]  # the error body follows
    return headers
