"""HTTPS endpoints for the Kubernetes API server: POST /mutate (pin images to digests) and
POST /validate (decide which images may run), plus GET /healthz (as /livez), /livez, /readyz
and /metrics (``api.health``). Every review is counted in ``moorage_admission_reviews_total``
by outcome (allowed, patched, denied, error) and timed.

A body that is not an AdmissionReview v1 gets a 400 with a JSON error, never a crash; an
internal failure answers the review with a refusal explaining it (the API server then applies
the webhook's failurePolicy only to timeouts and transport errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter

from aiohttp import web

from moorage import metrics
from moorage.admission.review import AdmissionRequest, AdmissionResponse, parse_review
from moorage.admission.setup import Admission
from moorage.api import health
from moorage.documents import DocumentError

log = logging.getLogger("moorage.admission")

#: An AdmissionReview is small; the API server caps objects at about 3 MiB.
MAX_REVIEW = 8 * 1024 * 1024


def _bad_request(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _outcome(response: AdmissionResponse) -> str:
    if not response.allowed:
        return "denied"
    return "patched" if response.patch else "allowed"


def _handler(
    webhook: str,
    decide: Callable[[AdmissionRequest], Awaitable[AdmissionResponse]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    reviews = metrics.current().admission_reviews
    outcomes = {o: reviews.labels(webhook, o) for o in ("allowed", "patched", "denied", "error")}
    duration = metrics.current().admission_duration.labels(webhook)

    async def answer(request: web.Request) -> tuple[web.Response, str]:
        """The response, and its outcome for the metrics."""
        try:
            review = parse_review(await request.read())
        except DocumentError as exc:
            return _bad_request(str(exc)), "error"
        except web.HTTPRequestEntityTooLarge:
            return _bad_request(f"body larger than {MAX_REVIEW} bytes", 413), "error"
        try:
            response = await decide(review)
            outcome = _outcome(response)
        except Exception:
            log.exception(
                "admission of %s %s/%s failed", review.kind, review.namespace, review.name
            )
            response = AdmissionResponse(
                review.uid,
                allowed=False,
                code=500,
                message="moorage failed to review this object; see the webhook's log",
            )
            outcome = "error"
        body = json.dumps(response.to_review()).encode()
        return web.Response(body=body, content_type="application/json"), outcome

    async def handle(request: web.Request) -> web.Response:
        started = perf_counter()
        response, outcome = await answer(request)
        outcomes[outcome].inc()
        duration.observe(perf_counter() - started)
        return response

    return handle


def create_webhook_app(
    admission: Admission,
    *,
    scheduled: bool = False,
    readiness: health.Readiness | None = None,
    with_metrics: bool = True,
) -> web.Application:
    """The webhooks' HTTP application; ``scheduled``: this process takes the cluster
    inventory (``admission.inventory``); ``readiness``: what ``/readyz`` checks (nothing if
    None); ``with_metrics``: serve ``/metrics``."""
    app = web.Application(client_max_size=MAX_REVIEW)
    app.router.add_post("/mutate", _handler("mutate", admission.pinner.review))
    app.router.add_post("/validate", _handler("validate", admission.validator))
    app.router.add_get("/healthz", health.livez)
    health.add_routes(app, readiness or health.Readiness({}), with_metrics=with_metrics)

    async def background(app: web.Application) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if scheduled and admission.inventory is not None:
            tasks.append(asyncio.create_task(admission.inventory()))
        if with_metrics:
            tasks.append(asyncio.create_task(metrics.flush_periodically()))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await admission.close()
        if with_metrics:
            metrics.current().flush()

    app.cleanup_ctx.append(background)
    return app
