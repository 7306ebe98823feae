"""GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from multidict import CIMultiDict

from moorage.api.v2.common import API_HEADERS, REQUEST_ID_HEADER, actor, read_body
from moorage.api.v2.headers import accepts, declared_media_type
from moorage.errors import ErrorCode, RegistryError
from moorage.registry.service import Registry

#: The longest ``OCI-Tag`` field line. The tags a push applied go comma-separated onto as many
#: lines as they need (RFC 9110, section 5.3: the two forms mean the same), so that neither a
#: line nor the number of lines outgrows what clients and proxies accept (aiohttp's client
#: takes lines of up to 8190 bytes, Python's http.client at most 100 header lines, HAProxy
#: 101 by default).
OCI_TAG_LINE = 1000


def oci_tag_lines(tags: Sequence[str]) -> list[str]:
    """``OCI-Tag`` field values listing ``tags``, each at most ``OCI_TAG_LINE`` long."""
    lines: list[str] = []
    for tag in tags:
        if lines and len(lines[-1]) + 2 + len(tag) <= OCI_TAG_LINE:
            lines[-1] += f", {tag}"
        else:
            lines.append(tag)
    return lines


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
    registry.usage.pulled(name, record.digest)  # a counter in memory: no I/O
    return web.Response(body=record.payload, headers=headers)


async def put_manifest(
    request: web.Request, registry: Registry, name: str, reference: str
) -> web.StreamResponse:
    payload = await read_body(request, registry.manifests.max_size, "manifest")
    who = actor(request)
    pushed = await registry.manifests.put(
        name,
        reference,
        payload,
        declared_media_type(request.headers.get("Content-Type")),
        who,
        request.query.getall("tag", ()),
    )
    registry.usage.pushed(name)
    digest = pushed.manifest.digest
    headers = CIMultiDict(
        {
            **API_HEADERS,
            "Location": f"/v2/{name}/manifests/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
            REQUEST_ID_HEADER: who.request_id,
        }
    )
    if pushed.manifest.subject is not None:
        headers["OCI-Subject"] = pushed.manifest.subject
    # Every tag the push points at the manifest, the path's included (the spec asks for the
    # tag parameters of a push by digest).
    for line in oci_tag_lines(pushed.tags):
        headers.add("OCI-Tag", line)
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
