"""HTTPS endpoints for the Kubernetes API server: POST /mutate (pin images to digests) and
POST /validate (decide which images may run), plus GET /healthz.

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

from aiohttp import web

from moorage.admission.review import AdmissionRequest, AdmissionResponse, parse_review
from moorage.admission.setup import Admission
from moorage.documents import DocumentError

log = logging.getLogger("moorage.admission")

#: An AdmissionReview is small; the API server caps objects at about 3 MiB.
MAX_REVIEW = 8 * 1024 * 1024


def _bad_request(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _handler(
    decide: Callable[[AdmissionRequest], Awaitable[AdmissionResponse]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            review = parse_review(await request.read())
        except DocumentError as exc:
            return _bad_request(str(exc))
        except web.HTTPRequestEntityTooLarge:
            return _bad_request(f"body larger than {MAX_REVIEW} bytes", 413)
        try:
            response = await decide(review)
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
        return web.Response(
            body=json.dumps(response.to_review()).encode(), content_type="application/json"
        )

    return handle


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_webhook_app(admission: Admission, *, scheduled: bool = False) -> web.Application:
    """The webhooks' HTTP application; ``scheduled``: this process takes the cluster
    inventory (``admission.inventory``)."""
    app = web.Application(client_max_size=MAX_REVIEW)
    app.router.add_post("/mutate", _handler(admission.pinner.review))
    app.router.add_post("/validate", _handler(admission.validator))
    app.router.add_get("/healthz", _healthz)

    async def background(app: web.Application) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if scheduled and admission.inventory is not None:
            task = asyncio.create_task(admission.inventory())
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await admission.close()

    app.cleanup_ctx.append(background)
    return app
