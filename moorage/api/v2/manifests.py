"""GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

from aiohttp import web

from moorage.api.v2.common import API_HEADERS, REQUEST_ID_HEADER, actor, read_body
from moorage.errors import ErrorCode, RegistryError
from moorage.registry.manifests import accepts
from moorage.registry.service import Registry


async def get_manifest(
    request: web.Request, registry: Registry, name: str, reference: str
) -> web.StreamResponse:
    record = await registry.manifests.get(name, reference)
    # Clients send one Accept line per media type (skopeo, podman) or one list.
    accept = ",".join(request.headers.getall("Accept", ()))
    if not accepts(accept, record.media_type):
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {reference} is {record.media_type}, which the Accept header excludes",
        )
    headers = {
        **API_HEADERS,
        "Content-Type": record.media_type,
        "Docker-Content-Digest": record.digest,
        "ETag": f'"{record.digest}"',
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(record.size)
        return web.Response(headers=headers)
    return web.Response(body=record.payload, headers=headers)


async def put_manifest(
    request: web.Request, registry: Registry, name: str, reference: str
) -> web.StreamResponse:
    payload = await read_body(request, registry.manifests.max_size, "manifest")
    who = actor(request)
    pushed = await registry.manifests.put(
        name, reference, payload, request.headers.get("Content-Type"), who
    )
    digest = pushed.manifest.digest
    headers = {
        **API_HEADERS,
        "Location": f"/v2/{name}/manifests/{digest}",
        "Docker-Content-Digest": digest,
        "Content-Length": "0",
        REQUEST_ID_HEADER: who.request_id,
    }
    if pushed.manifest.subject is not None:
        headers["OCI-Subject"] = pushed.manifest.subject
    return web.Response(status=201, headers=headers)


async def delete_manifest(
    request: web.Request, registry: Registry, name: str, reference: str
) -> web.StreamResponse:
    who = actor(request)
    await registry.manifests.delete(name, reference, who)
    return web.Response(
        status=202,
        headers={**API_HEADERS, "Content-Length": "0", REQUEST_ID_HEADER: who.request_id},
    )
