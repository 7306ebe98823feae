"""``GET /livez``, ``/readyz`` and ``/metrics``, on the registry's listener and the webhooks'.

- ``/livez`` answers 200 whenever the process's event loop runs its handler; it asks nothing
  else, so a slow database never gets a process restarted.
- ``/readyz`` answers 200 when every check of its ``Readiness`` passes (the metadata store
  answers a trivial query, the storage driver a stat), else 503; the JSON body says how each
  check went. A check has ``timeout`` seconds to answer. The result is kept for ``ttl``
  seconds (one second by default), so probes cost the stores nothing, however many there are.
- ``/metrics`` (with ``[metrics] enabled``) is the Prometheus text of ``moorage.metrics``: in
  ``moorage serve``, the sum over every worker process.

None of them asks for credentials: probes and scrapers carry none, and they say nothing about
the registry's contents. They live outside ``/v2/``, so no repository name can shadow them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from moorage import metrics
from moorage.registry.service import Registry

log = logging.getLogger("moorage.health")

Check = Callable[[], Awaitable[object]]

#: Seconds a readiness result is reused.
READY_TTL = 1.0
#: Seconds each readiness check may take; a slower one fails. Probes should wait longer than
#: this (Kubernetes: ``timeoutSeconds`` of 3 or more).
CHECK_TIMEOUT = 2.0


class Readiness:
    """Runs named checks (coroutines that raise when their dependency fails), at most once
    per ``ttl`` seconds however many callers ask meanwhile."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        ttl: float = READY_TTL,
        timeout: float = CHECK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = dict(checks)
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._result: tuple[bool, dict[str, str]] | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def result(self) -> tuple[bool, dict[str, str]]:
        """Whether every check passed, and each check's outcome: "ok" or why it failed."""
        if self._result is None or self.clock() >= self._expires:
            async with self._lock:  # callers meanwhile wait for this run, not one of their own
                if self._result is None or self.clock() >= self._expires:
                    self._result = await self._run()
                    self._expires = self.clock() + self.ttl
        return self._result

    async def _run(self) -> tuple[bool, dict[str, str]]:
        outcomes = await asyncio.gather(*(self._check(n, c) for n, c in self.checks.items()))
        report = dict(zip(self.checks, outcomes, strict=True))
        return all(outcome == "ok" for outcome in outcomes), report

    async def _check(self, name: str, check: Check) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                await check()
        except TimeoutError:
            log.warning("readiness: %s did not answer within %g s", name, self.timeout)
            return f"failed: no answer within {self.timeout:g} s"
        except Exception as exc:
            # The body names the kind of failure only: probes carry no credentials, and a
            # message may name hosts. The log has it whole.
            log.warning("readiness: %s failed: %s: %s", name, type(exc).__name__, exc)
            return f"failed: {type(exc).__name__}"
        return "ok"


def registry_readiness(registry: Registry) -> Readiness:
    """The registry API is ready when its metadata store and storage driver both answer."""
    return Readiness({"metadata": registry.check_metadata, "storage": registry.check_storage})


def webhook_readiness(registry: Registry) -> Readiness:
    """The webhooks are ready when the metadata store answers: they never touch blob
    storage, so a storage outage must not take them out of their Service (with
    ``failurePolicy: Fail`` that would refuse every pod in the namespaces they cover)."""
    return Readiness({"metadata": registry.check_metadata})


async def livez(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _readyz(readiness: Readiness) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def readyz(request: web.Request) -> web.Response:
        ready, checks = await readiness.result()
        return web.json_response(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status=200 if ready else 503,
        )

    return readyz


async def metrics_text(request: web.Request) -> web.Response:
    return web.Response(
        body=metrics.current().exposition(), headers={"Content-Type": metrics.CONTENT_TYPE}
    )


def add_routes(app: web.Application, readiness: Readiness, *, with_metrics: bool) -> None:
    """Serve ``/livez``, ``/readyz`` (by ``readiness``) and, ``with_metrics``, ``/metrics``."""
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", _readyz(readiness))
    if with_metrics:
        app.router.add_get("/metrics", metrics_text)
