"""GET /v2/<name>/tags/list, GET /v2/_catalog and GET /v2/<name>/referrers/<digest>."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from moorage import mediatypes as mt
from moorage.api.v2.common import API_HEADERS, next_link, pagination
from moorage.digest import Digest
from moorage.registry.service import Registry


def _json(body: dict[str, Any], headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


def _page(items: list[str], limit: int | None, path: str) -> tuple[list[str], dict[str, str]]:
    headers = dict(API_HEADERS)
    if limit is not None and len(items) > limit:
        items = items[:limit]
        if items:
            headers["Link"] = next_link(path, limit, items[-1])
    return items, headers


async def list_tags(
    request: web.Request, registry: Registry, name: str, _ref: str
) -> web.StreamResponse:
    limit, last = pagination(request)
    tags = await registry.manifests.tags(name, None if limit is None else limit + 1, last)
    tags, headers = _page(tags, limit, request.path)
    return _json({"name": name, "tags": tags}, headers)


async def catalog(
    request: web.Request, registry: Registry, _name: str, _ref: str
) -> web.StreamResponse:
    limit, last = pagination(request)
    names = await registry.repositories(None if limit is None else limit + 1, last)
    names, headers = _page(names, limit, request.path)
    return _json({"repositories": names}, headers)


async def referrers(
    request: web.Request, registry: Registry, name: str, ref: str
) -> web.StreamResponse:
    digest = Digest.parse(ref)
    artifact_type = request.query.get("artifactType") or None
    records = await registry.manifests.referrers(name, digest, artifact_type)
    manifests = []
    for record in records:
        descriptor: dict[str, Any] = {
            "mediaType": record.media_type,
            "digest": record.digest,
            "size": record.size,
        }
        if record.artifact_type:
            descriptor["artifactType"] = record.artifact_type
        if record.annotations:
            descriptor["annotations"] = json.loads(record.annotations)
        manifests.append(descriptor)
    headers = dict(API_HEADERS)
    headers["Content-Type"] = mt.OCI_INDEX
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    return web.Response(body=json.dumps(body).encode(), headers=headers)
