"""The aiohttp application: routing for /v2/, auth, and the mapping of errors to responses.

Repository names contain slashes, so every /v2/<name>/... request goes to one dispatcher that
splits the path (``v2.paths``), checks the name and the caller's rights, and calls the handler
for (endpoint, method). Errors are rendered in one place (``api.errors``); there are no
middlewares on the hot path. The dispatcher also counts each request for ``/metrics`` (a dict
lookup and a few additions in memory: ``moorage.metrics``). ``/livez``, ``/readyz`` and
``/metrics`` are served beside ``/v2/``, without auth (``api.health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Protocol

from aiohttp import web
from aiohttp.payload import Payload

from moorage import metrics
from moorage.api import extension, health
from moorage.api.auth import Action, Authenticator
from moorage.api.errors import exception_response
from moorage.api.settings import AuthSettings
from moorage.api.v2 import blobs, listing, manifests, uploads
from moorage.api.v2.common import (
    ACTOR_KEY,
    API_HEADERS,
    REQUEST_ID_HEADER,
    SENT_KEY,
    USER_KEY,
)
from moorage.api.v2.paths import parse_path
from moorage.errors import ClientDisconnected, ErrorCode, RegistryError
from moorage.metrics import MetricsSettings, RequestSeries
from moorage.names import validate_name
from moorage.registry.service import Registry
from moorage.registry.settings import DeleteSettings, MountSettings
from moorage.registry.upload_sessions import UploadOutOfOrder
from moorage.registry.usage import FLUSH_INTERVAL

log = logging.getLogger("moorage.api")

REGISTRY = web.AppKey("registry", Registry)

Handler = Callable[[web.Request, Registry, str, str], Awaitable[web.StreamResponse]]

_PURGE_INTERVAL = 600.0

#: The longest request line the server reads (aiohttp's default is 8190 bytes). A manifest push
#: may name up to ``MAX_PUSH_TAGS`` tags of 128 characters in its query: about 14 KB with the
#: longest repository name, more if a client percent-encodes what it need not. aiohttp refuses
#: a longer line itself (400, in plain text) before the API sees it.
MAX_REQUEST_LINE = 64 * 1024


class Settings(Protocol):
    """What the API reads of the registry's settings."""

    @property
    def auth(self) -> AuthSettings: ...

    @property
    def mount(self) -> MountSettings: ...

    @property
    def delete(self) -> DeleteSettings: ...

    @property
    def metrics(self) -> MetricsSettings: ...


def _in_flight(handler: Handler) -> Handler:
    """``handler``, counted in ``moorage_uploads_in_flight`` while it runs."""
    gauge = metrics.current().uploads_in_flight

    async def counted(
        request: web.Request, registry: Registry, name: str, reference: str
    ) -> web.StreamResponse:
        gauge.inc()
        try:
            return await handler(request, registry, name, reference)
        finally:
            gauge.dec()

    return counted


def _size(body: bytes | bytearray | Payload | None) -> int:
    """The length of a response's body that is not ``bytes``."""
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray):
        return len(body)
    return body.size or 0


class V2Api:
    """Entry points for /v2/ and everything under it."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.auth = Authenticator(
            settings.auth.htpasswd, settings.auth.anonymous_pull, frozenset(settings.auth.admins)
        )
        routes: dict[tuple[str, str], tuple[Handler, Action]] = {
            ("manifest", "GET"): (manifests.get_manifest, "pull"),
            ("manifest", "HEAD"): (manifests.get_manifest, "pull"),
            ("manifest", "PUT"): (manifests.put_manifest, "push"),
            ("manifest", "DELETE"): (manifests.delete_manifest, "delete"),
            ("blob", "GET"): (blobs.get_blob, "pull"),
            ("blob", "HEAD"): (blobs.get_blob, "pull"),
            ("blob", "DELETE"): (blobs.delete_blob, "delete"),
            ("uploads", "POST"): (self._start_upload, "push"),
            ("upload", "GET"): (uploads.upload_status, "push"),
            ("upload", "PATCH"): (uploads.patch_upload, "push"),
            ("upload", "PUT"): (uploads.put_upload, "push"),
            ("upload", "DELETE"): (uploads.cancel_upload, "push"),
            ("tags", "GET"): (listing.list_tags, "pull"),
            ("referrers", "GET"): (listing.referrers, "pull"),
            ("catalog", "GET"): (listing.catalog, "pull"),
            # The _moorage extension (moorage/api/extension.py).
            ("registry _oci/ext/discover", "GET"): (extension.discover, "pull"),
            ("repository _oci/ext/discover", "GET"): (extension.discover, "pull"),
            ("registry _moorage/docs", "GET"): (extension.docs, "pull"),
            ("repository _moorage/tags/history", "GET"): (extension.tag_history, "pull"),
            ("repository _moorage/tags/at", "GET"): (extension.tag_at, "pull"),
            ("repository _moorage/tags/restore", "POST"): (extension.tag_restore, "push"),
            ("registry _moorage/tags/digest", "GET"): (extension.digest_tags, "pull"),
            ("registry _moorage/policy/rules", "GET"): (extension.get_policy, "pull"),
            ("registry _moorage/policy/rules", "PUT"): (extension.put_policy, "admin"),
            ("registry _moorage/policy/check", "GET"): (extension.check_policy, "pull"),
            ("registry _moorage/policy/changes", "GET"): (extension.policy_changes, "pull"),
            ("registry _moorage/pins", "GET"): (extension.list_pins, "pull"),
            ("registry _moorage/gc", "GET"): (extension.collect, "admin"),
            ("registry _moorage/gc", "POST"): (extension.collect, "admin"),
            ("registry _moorage/usage", "GET"): (extension.usage, "admin"),
        }
        self._metrics = metrics.current()
        self._counting = settings.metrics.enabled
        if self._counting:
            for key in (("uploads", "POST"), ("upload", "PATCH"), ("upload", "PUT")):
                handler, action = routes[key]
                routes[key] = (_in_flight(handler), action)
        #: By (endpoint, method): the handler, the action it needs, and the series its
        #: requests count into by status (filled as statuses occur).
        self._routes: dict[tuple[str, str], tuple[Handler, Action, dict[int, RequestSeries]]]
        self._routes = {key: (handler, action, {}) for key, (handler, action) in routes.items()}

    def _count(
        self,
        statuses: dict[int, RequestSeries] | None,
        kind: str,
        method: str,
        request: web.Request,
        response: web.StreamResponse,
        started: float,
    ) -> None:
        """Add a request to its series, found by status alone in ``statuses``, its endpoint's
        (None for requests that reached no endpoint: found by kind and method too). Cheap
        reads only: ``response.content_length`` would cost a manifest GET 1% (a header
        lookup and a parse), and GET and HEAD bodies are never read, so ``request.content``
        is not asked."""
        seconds = perf_counter() - started
        status = response.status
        series = None if statuses is None else statuses.get(status)
        if series is None:
            series = self._metrics.request_series(kind, method, status)
            if statuses is not None:
                statuses[status] = series
        series.latencies.append(seconds)
        if method == "HEAD":
            return
        if type(response) is web.Response:
            body = response.body
            series.sent += len(body) if type(body) is bytes else _size(body)
        else:  # streamed: the handler may say how much it sent before the client went away
            series.sent += request.get(SENT_KEY, response.content_length) or 0
        if method != "GET":
            series.received += request.content.total_bytes

    async def _start_upload(
        self, request: web.Request, registry: Registry, name: str, _ref: str
    ) -> web.StreamResponse:
        return await uploads.start_upload(request, registry, name, self.settings.mount.automatic)

    async def base(self, request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        try:
            await self.auth.authenticate(request.headers.get("Authorization"), "pull", probe=True)
            response: web.StreamResponse = web.json_response({}, headers=API_HEADERS)
        except RegistryError as exc:
            response = exception_response(exc)
        if self._counting:
            self._count(None, "base", request.method, request, response, started)
        return response

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        method = request.method
        route = parse_path(request.match_info["tail"])
        statuses: dict[int, RequestSeries] | None = None  # its endpoint's, once it has one
        try:
            if route is None:
                raise RegistryError(ErrorCode.UNSUPPORTED, "no such endpoint", status=404)
            entry = self._routes.get((route.endpoint, method))
            if entry is None:
                if route.kind == "extension" and not any(
                    endpoint == route.endpoint for endpoint, _ in self._routes
                ):
                    raise RegistryError(
                        ErrorCode.EXTENSION_UNKNOWN, f"unknown extension {route.reference}"
                    )
                allowed = sorted(m for e, m in self._routes if e == route.endpoint)
                raise RegistryError(
                    ErrorCode.UNSUPPORTED,
                    f"{method} is not supported here",
                    headers={"Allow": ", ".join(allowed)},
                )
            handler, action, statuses = entry
            if action == "delete" and not self.settings.delete.enabled:
                raise RegistryError(ErrorCode.UNSUPPORTED, "deletion is disabled on this registry")
            if self.auth.enabled:
                user = await self.auth.authenticate(request.headers.get("Authorization"), action)
                if user is not None:
                    request[USER_KEY] = user
            if route.name:
                validate_name(route.name)
            response = await handler(request, self.registry, route.name, route.reference)
        except UploadOutOfOrder as exc:
            exc.headers.update(
                uploads.out_of_order_headers(exc.repository, exc.upload_id, exc.offset)
            )
            response = exception_response(exc)
        except ClientDisconnected as exc:
            if not exc.reported:  # the upload service reports its own
                log.info(
                    "client aborted %s %s after %d bytes of its request body",
                    method,
                    request.path,
                    exc.received,
                )
            response = exception_response(exc)  # nobody reads it
        except Exception as exc:
            response = exception_response(exc)
            if ACTOR_KEY in request:  # e.g. a refused change: the id its history record has
                response.headers[REQUEST_ID_HEADER] = request[ACTOR_KEY].request_id
        if self._counting:
            kind = "unknown" if route is None else route.kind
            self._count(statuses, kind, method, request, response, started)
        return response


async def _purge_uploads(registry: Registry) -> None:
    while True:
        try:
            removed = await registry.uploads.purge_expired()
            if removed:
                log.info("removed %d expired upload session(s)", removed)
        except Exception:
            log.exception("purging expired uploads failed")
        await asyncio.sleep(_PURGE_INTERVAL)


async def _flush_usage(registry: Registry) -> None:
    """Write this worker's pull and push counters to the store every ``FLUSH_INTERVAL``
    seconds (the last flush is the app's cleanup's)."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await registry.usage.flush()
        except Exception:
            log.exception("recording usage failed; the counts are kept for the next try")


async def _collect_periodically(registry: Registry) -> None:
    """Garbage collection every ``gc.interval`` seconds (a tenth either way, so replicas
    started together spread out); replicas collecting at once are safe, only wasteful."""
    interval = registry.collection.interval
    while True:
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            report = await registry.collector().run()
        except Exception:
            log.exception("garbage collection failed; the next run finishes the job")
            continue
        log.info(
            "garbage collection: %d manifests, %d blob links and %d blobs' bytes deleted "
            "(%d bytes) in %.1f s",
            report.manifests_deleted,
            report.links_deleted,
            len(report.deleted),
            report.bytes_freed,
            report.finished - report.started,
        )


def create_app(
    registry: Registry, settings: Settings, *, scheduled: bool = False
) -> web.Application:
    """The registry's HTTP application; ``scheduled``: this process runs the periodic jobs
    (garbage collection every ``gc.interval`` seconds)."""
    # Manifests are read with an explicit limit; blobs stream without one.
    app = web.Application(client_max_size=1024**4)
    app[REGISTRY] = registry
    api = V2Api(registry, settings)
    app.router.add_get("/v2/", api.base)
    app.router.add_route("*", "/v2/{tail:.+}", api.dispatch)
    health.add_routes(
        app, health.registry_readiness(registry), with_metrics=settings.metrics.enabled
    )

    async def background(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(_purge_uploads(registry)),
            asyncio.create_task(_flush_usage(registry)),
        ]
        if scheduled and registry.collection.interval > 0:
            tasks.append(asyncio.create_task(_collect_periodically(registry)))
        if settings.metrics.enabled:
            tasks.append(asyncio.create_task(metrics.flush_periodically()))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await registry.usage.flush()  # waits for a flush under way, then the rest
        except Exception:
            log.exception("recording usage at shutdown failed; its counts are lost")
        if settings.metrics.enabled:
            metrics.current().flush()
        await registry.close()

    app.cleanup_ctx.append(background)
    return app
