"""The ``_moorage`` registry extension: tag history, restore, and the tag policy.

Endpoints follow the distribution-spec's extension layout (docs/extensions.md):

    GET  /v2/_oci/ext/discover              lists the extension and its endpoints
    GET  /v2/_moorage/docs                  this text
    GET  /v2/<name>/_moorage/tags/history?tag=T[&n=N&last=ID]
    GET  /v2/<name>/_moorage/tags/at?tag=T&time=2026-05-12T10:00Z
    POST /v2/<name>/_moorage/tags/restore?tag=T&digest=D
    GET  /v2/_moorage/tags/digest?digest=D
    GET  /v2/_moorage/policy/rules          PUT the same path to replace them (admins)
    GET  /v2/_moorage/policy/check?repository=R&tag=T
    GET  /v2/_moorage/policy/changes[?n=N]
    GET  /v2/_moorage/pins[?namespace=NS&image=REF&n=N&last=ID]   what the pinning webhook
                                            resolved images to, where and when, newest first
    GET  /v2/_moorage/gc[?summary]          what garbage collection would delete now, and why
                                            everything else is kept (a dry run; admins)
    POST /v2/_moorage/gc[?summary]          collect garbage now; the report (admins);
                                            with summary, counts instead of every item
    GET  /v2/_moorage/usage[?repository=R]  per repository, by name: manifests, tags and blobs
                                            stored, their bytes (manifests, blobs only it
                                            holds, blobs it shares), pulls and pushes counted
                                            and the last of each (admins); counts reach it
                                            within 10 s
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from moorage.api.v2.common import (
    API_HEADERS,
    REQUEST_ID_HEADER,
    actor,
    next_link,
    pagination,
    read_body,
)
from moorage.digest import Digest
from moorage.errors import ErrorCode, RegistryError
from moorage.model import PinRecord, PolicyChange, RepositoryUsage, TagEvent
from moorage.names import validate_name, validate_tag
from moorage.reference import ReferenceError, parse_reference
from moorage.registry.collection_report import as_document
from moorage.registry.service import Registry
from moorage.registry.tags import parse_policy
from moorage.times import format_time, parse_time

EXTENSION = "_moorage"
#: The extension documents itself: GET /v2/_moorage/docs returns this module's docstring.
DOCS_URL = "/v2/_moorage/docs"
ENDPOINTS = [
    "_moorage/docs",
    "_moorage/tags/history",
    "_moorage/tags/at",
    "_moorage/tags/restore",
    "_moorage/tags/digest",
    "_moorage/policy/rules",
    "_moorage/policy/check",
    "_moorage/policy/changes",
    "_moorage/pins",
    "_moorage/gc",
    "_moorage/usage",
]
_POLICY_LIMIT = 1024 * 1024


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(),
        headers={**API_HEADERS, "Content-Type": "application/json", **(headers or {})},
    )


def _param(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise RegistryError(
            ErrorCode.PARAMETER_INVALID, f"the {name!r} query parameter is required"
        )
    return value


def event_json(event: TagEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "repository": event.repository,
        "tag": event.tag,
        "action": event.action,
        "old_digest": event.old_digest,
        "new_digest": event.new_digest,
        "time": format_time(event.at),
        "user": event.user,
        "address": event.address,
        "request_id": event.request_id,
        "rule": event.rule,
        "reason": event.reason,
    }


def change_json(change: PolicyChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "time": format_time(change.at),
        "user": change.user,
        "address": change.address,
        "request_id": change.request_id,
        "source": change.source,
        "old": None if change.old_document is None else json.loads(change.old_document),
        "new": json.loads(change.new_document),
    }


async def discover(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    return _json(
        {
            "extensions": [
                {
                    "name": EXTENSION,
                    "description": "tag history and restore, immutable/mutable tag policies",
                    "url": DOCS_URL,
                    "endpoints": ENDPOINTS,
                }
            ]
        }
    )


async def docs(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    return web.Response(text=__doc__ or "", content_type="text/markdown", headers=dict(API_HEADERS))


async def tag_history(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    tag = validate_tag(_param(request, "tag"))
    limit, last = pagination(request)
    if last is not None and not (last.isascii() and last.isdigit()):
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, "last must be an event id")
    before = None if last is None else int(last)
    events = await registry.history.events(name, tag, None if limit is None else limit + 1, before)
    headers: dict[str, str] = {}
    if limit is not None and len(events) > limit:
        events = events[:limit]
        if events:
            headers["Link"] = next_link(request.path, limit, str(events[-1].id), {"tag": tag})
    return _json({"name": name, "tag": tag, "events": [event_json(e) for e in events]}, headers)


async def tag_at(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    tag = validate_tag(_param(request, "tag"))
    raw = _param(request, "time")
    try:
        when = parse_time(raw)
    except ValueError as exc:
        raise RegistryError(ErrorCode.PARAMETER_INVALID, str(exc)) from None
    event = await registry.history.at(name, tag, when)
    return _json(
        {
            "name": name,
            "tag": tag,
            "time": format_time(when),
            "digest": None if event is None else event.new_digest,
            "event": None if event is None else event_json(event),
        }
    )


async def tag_restore(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    tag = validate_tag(_param(request, "tag"))
    digest = str(Digest.parse(_param(request, "digest")))
    who = actor(request)
    previous = await registry.history.restore(name, tag, digest, who)
    return _json(
        {"name": name, "tag": tag, "digest": digest, "previous_digest": previous},
        {REQUEST_ID_HEADER: who.request_id},
    )


async def digest_tags(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    digest = str(Digest.parse(_param(request, "digest")))
    summaries = await registry.history.tags_for(digest)
    return _json(
        {
            "digest": digest,
            "tags": [
                {
                    "repository": s.repository,
                    "tag": s.tag,
                    "since": format_time(s.since),
                    "until": None if s.until is None else format_time(s.until),
                    "current": s.until is None,
                }
                for s in summaries
            ],
        }
    )


async def get_policy(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    state = await registry.policies.current()
    record = await registry.policies.stored()
    body: dict[str, Any] = {"version": state.version, **state.policy.to_dict()}
    if record is not None:
        body["updated"] = {
            "time": format_time(record.updated_at),
            "user": record.user,
            "address": record.address,
            "source": record.source,
        }
    return _json(body)


async def put_policy(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    raw = await read_body(request, _POLICY_LIMIT, "policy")
    policy = parse_policy(raw, "the policy sent to PUT /v2/_moorage/policy/rules")
    who = actor(request)
    version = await registry.policies.replace(policy, who, "api")
    return _json({"version": version, **policy.to_dict()}, {REQUEST_ID_HEADER: who.request_id})


async def check_policy(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    repository = validate_name(_param(request, "repository"))
    tag = validate_tag(_param(request, "tag"))
    decision = await registry.policies.check(repository, tag)
    return _json(
        {
            "repository": repository,
            "tag": tag,
            "mode": decision.mode,
            "immutable": decision.immutable,
            "rule": decision.rule.to_dict() if decision.rule else None,
            "reason": decision.reason,
        }
    )


async def policy_changes(
    request: web.Request, registry: Registry, name: str, _: str
) -> web.Response:
    limit, _last = pagination(request)
    changes = await registry.policies.changes(limit)
    return _json({"changes": [change_json(c) for c in changes]})


def pin_json(pin: PinRecord) -> dict[str, Any]:
    return {
        "id": pin.id,
        "time": format_time(pin.at),
        "namespace": pin.namespace,
        "kind": pin.kind,
        "name": pin.name,
        "container": pin.container,
        "container_kind": pin.container_kind,
        "image": pin.image,
        "repository": pin.repository,
        "tag": pin.tag,
        "digest": pin.digest,
        "source": pin.source,
        "user": pin.user,
        "request_uid": pin.request_uid,
    }


async def list_pins(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    """Pins filtered by namespace and by image (parsed as workloads write it)."""
    limit, last = pagination(request)
    if last is not None and not (last.isascii() and last.isdigit()):
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, "last must be a pin id")
    repository = tag = None
    image = request.query.get("image")
    if image:
        try:
            reference = parse_reference(image)
        except ReferenceError as exc:
            raise RegistryError(ErrorCode.PARAMETER_INVALID, str(exc)) from None
        repository, tag = reference.repository, reference.tag
    pins = await registry.pins.list(
        request.query.get("namespace") or None,
        repository,
        tag,
        None if limit is None else limit + 1,
        None if last is None else int(last),
    )
    headers: dict[str, str] = {}
    if limit is not None and len(pins) > limit:
        pins = pins[:limit]
        if pins:
            extra = {k: v for k, v in request.query.items() if k in ("namespace", "image")}
            headers["Link"] = next_link(request.path, limit, str(pins[-1].id), extra)
    return _json({"pins": [pin_json(p) for p in pins]}, headers)


async def collect(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    """GET: a dry run of garbage collection; POST: a collection. Either way, its report."""
    report = await registry.collector().run(dry_run=request.method == "GET")
    return _json(as_document(report, details=request.query.get("summary") is None))


def usage_json(row: RepositoryUsage) -> dict[str, Any]:
    return {
        "name": row.repository,
        "manifests": row.manifests,
        "tags": row.tags,
        "blobs": row.blobs,
        "manifest_bytes": row.manifest_bytes,
        "own_bytes": row.own_bytes,
        "shared_bytes": row.shared_bytes,
        "pulls": row.pulls,
        "pushes": row.pushes,
        "last_pull": None if row.last_pull is None else format_time(row.last_pull),
        "last_push": None if row.last_push is None else format_time(row.last_push),
    }


async def usage(request: web.Request, registry: Registry, name: str, _: str) -> web.Response:
    """Usage per repository (chargeback): one repository's, or every repository's."""
    repository = request.query.get("repository")
    if repository is not None:
        repository = validate_name(repository)
    rows = await registry.usage.report(repository)
    return _json({"repositories": [usage_json(row) for row in rows]})
