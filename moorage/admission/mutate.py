"""The pinning webhook: resolve every unpinned image of a request and answer with a patch.

Each distinct image is resolved once per review, all of them concurrently, under one deadline
well inside the webhook timeout. An image that cannot be resolved refuses the whole object by
default, with a message per container; with ``on_failure = "warn"`` the object is admitted,
the other images pinned, and the failures returned as AdmissionReview warnings. Pins are
recorded (unless the request is a dry run) after the answer is computed, in the background,
so the admission latency never includes a disk sync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from moorage.admission.pinning import Candidate, candidates, patch
from moorage.admission.resolver import Resolution, ResolveContext, ResolveError, Resolver
from moorage.admission.review import AdmissionRequest, AdmissionResponse
from moorage.admission.workloads import ImageSite, pod_spec, pull_secret_names
from moorage.model import PinRecord

log = logging.getLogger("moorage.admission")

OnFailure = Literal["deny", "warn"]
Recorder = Callable[[Sequence[PinRecord]], Awaitable[None]]


def _context(request: AdmissionRequest) -> ResolveContext:
    spec = pod_spec(request.kind, request.object)
    account = spec.get("serviceAccountName") if spec is not None else None
    return ResolveContext(
        namespace=request.namespace,
        pull_secrets=pull_secret_names(spec),
        service_account=account if isinstance(account, str) else "",
    )


def _where(site: ImageSite) -> str:
    return f'container "{site.container}" ({site.container_kind}) image "{site.image}"'


class Pinner:
    def __init__(
        self,
        resolver: Resolver,
        record: Recorder | None = None,
        *,
        on_failure: OnFailure = "deny",
        deadline: float = 5.0,
    ) -> None:
        self.resolver = resolver
        self.record = record
        self.on_failure = on_failure
        self.deadline = deadline
        self._background: set[asyncio.Task[None]] = set()

    async def review(self, request: AdmissionRequest) -> AdmissionResponse:
        found = candidates(request)
        response = AdmissionResponse(request.uid)
        if not found:
            return response
        outcomes = await self._resolve(found, _context(request))
        pins: dict[ImageSite, Resolution] = {}
        problems: list[str] = []
        for candidate in found:
            outcome = outcomes.get(candidate.site.image) if candidate.reference else None
            if isinstance(outcome, Resolution):
                pins[candidate.site] = outcome
            else:
                reason = candidate.error or str(outcome) or "could not be resolved"
                problems.append(f"{_where(candidate.site)}: {reason}")
        if problems and self.on_failure == "deny":
            response.allowed = False
            response.code = 403
            response.message = (
                "moorage could not pin every image to a digest, so this object was refused "
                '(set admission.on_failure = "warn" to admit it unpinned): ' + "; ".join(problems)
            )
            return response
        response.warnings = [f"not pinned: {p}" for p in problems]
        response.patch = patch({site: r.digest for site, r in pins.items()})
        if pins and self.record is not None and not request.dry_run:
            self._record(request, found, pins)
        return response

    async def _resolve(
        self, found: list[Candidate], context: ResolveContext
    ) -> dict[str, Resolution | str]:
        """Each distinct image once, concurrently; an error message where it failed."""
        unique = {c.site.image: c.reference for c in found if c.reference is not None}
        tasks = {
            image: asyncio.ensure_future(self.resolver.resolve(reference, context))
            for image, reference in unique.items()
        }
        if tasks:
            _done, pending = await asyncio.wait(tasks.values(), timeout=self.deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        outcomes: dict[str, Resolution | str] = {}
        for image, task in tasks.items():
            if task.cancelled():
                outcomes[image] = f"timed out after {self.deadline:g} s"
            elif isinstance(task.exception(), ResolveError):
                outcomes[image] = str(task.exception())
            elif task.exception() is not None:
                log.error("resolving %s failed", image, exc_info=task.exception())
                outcomes[image] = "internal error while resolving (see the webhook's log)"
            else:
                outcomes[image] = task.result()
        return outcomes

    def _record(
        self,
        request: AdmissionRequest,
        found: list[Candidate],
        pins: dict[ImageSite, Resolution],
    ) -> None:
        now = time.time()
        records = [
            PinRecord(
                at=now,
                namespace=request.namespace,
                kind=request.kind,
                name=request.display_name,
                container_kind=c.site.container_kind,
                container=c.site.container,
                image=c.site.image,
                repository=c.reference.repository,
                tag=c.reference.tag or "",
                digest=pins[c.site].digest,
                source=pins[c.site].source,
                request_uid=request.uid,
                user=request.user,
            )
            for c in found
            if c.site in pins and c.reference is not None
        ]
        assert self.record is not None
        task = asyncio.ensure_future(self._save(records))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _save(self, records: list[PinRecord]) -> None:
        assert self.record is not None
        try:
            await self.record(records)
        except Exception:
            log.exception("recording %d pin(s) failed", len(records))

    async def drain(self) -> None:
        """Wait for pins still being recorded (on shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
