"""Running the registry: building it from settings, and the pre-fork worker supervisor.

The parent process prepares the data directory and the database schema, opens one listening
socket per worker on the same address with SO_REUSEPORT, and forks the workers. The kernel
spreads new connections evenly over the sockets (one shared socket let whichever worker woke
first accept a whole burst). The parent keeps the sockets open, so a worker that dies is
replaced on the same socket and the connections waiting in its queue are not lost. Workers
share nothing in memory: everything they must agree on lives in the metadata store and
storage. A worker asks the kernel for SIGTERM when its parent dies, so a parent killed
outright (SIGKILL, the OOM killer) never leaves workers serving without a supervisor.

With ``[metrics] enabled``, the parent makes a fresh directory where every worker keeps its
metrics (``moorage.metrics``), so that ``/metrics`` on any of them gives the sum; it drops the
gauges of a worker that died, and removes the directory when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from aiohttp import web

from moorage import metrics
from moorage.addresses import split_address
from moorage.admission.resolver import ResolveError
from moorage.admission.setup import build_admission, own_hosts
from moorage.api.app import MAX_REQUEST_LINE, create_app
from moorage.api.auth import load_htpasswd
from moorage.api.health import webhook_readiness
from moorage.api.webhook import create_webhook_app
from moorage.backends import (
    describe_backends,
    migrate,
    open_metadata,
    open_storage,
    uses_data_directory,
)
from moorage.config import Settings
from moorage.meta.errors import MetadataUnavailable
from moorage.model import Actor
from moorage.registry.service import Registry

log = logging.getLogger("moorage.server")


class StartupError(Exception):
    """The registry cannot start as configured: a file the settings name cannot be used, no
    cluster to read pull secrets from, an unreachable or outdated metadata store."""


def build_registry(
    settings: Settings, clock: Callable[[], float] = time.time, *, timed: bool = False
) -> Registry:
    """The registry the settings describe; ``clock`` is its time (what the store stamps,
    when uploads expire), the wall clock but in tests; ``timed``: its metadata operations
    are timed for ``/metrics``."""
    meta = open_metadata(settings, clock, timed=timed)
    return Registry(
        open_storage(settings),
        meta,
        clock=clock,
        max_manifest_size=settings.manifests.max_size,
        upload_ttl=settings.uploads.ttl,
        upload_lease=settings.uploads.lease,
        upload_checkpoint=settings.uploads.checkpoint,
        download_redirect=settings.storage.download_redirect,
        collection=settings.gc,
        hosts=own_hosts(settings),
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    cert, key = settings.tls.cert, settings.tls.key
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def bind(address: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one HOST:PORT (port 0 picks a port for all of them)."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if count > 1:
        # SO_REUSEPORT would let a second registry join this port silently and take half of
        # its connections: a plain bind first fails if anything listens there already.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(1024)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass(frozen=True)
class Listeners:
    """One worker's sockets: the registry API's and the admission webhooks', either optional;
    ``first``: the worker runs the registry's scheduled jobs (garbage collection)."""

    registry: socket.socket | None
    webhooks: socket.socket | None
    first: bool = False

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.registry, self.webhooks) if s is not None]


CONFIG_ACTOR = Actor(None, "config", "startup")


async def install_configured_policy(registry: Registry, settings: Settings) -> None:
    """Put the config file's tag policy in force if it changed since it was last installed."""
    policy = settings.policy.configured()
    if policy is not None and await registry.policies.apply_configured(
        policy, CONFIG_ACTOR, "configuration"
    ):
        log.info("tag policy from the configuration installed (%d rules)", len(policy.rules))


async def _start(app: web.Application, sock: socket.socket, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("moorage.access") if settings.log.access else None,
        handle_signals=False,
        max_line_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context(settings)).start()
    return runner


async def _serve_worker(settings: Settings, listeners: Listeners) -> None:
    registry = build_registry(settings, timed=settings.metrics.enabled)
    if settings.storage.driver == "memory":  # its metadata is this process's own
        await install_configured_policy(registry, settings)
    runners: list[web.AppRunner] = []
    if listeners.webhooks is not None:
        admission = build_admission(settings, registry)
        webhooks = create_webhook_app(
            admission,
            scheduled=listeners.first,
            readiness=webhook_readiness(registry),
            with_metrics=settings.metrics.enabled,
        )
        runners.append(await _start(webhooks, listeners.webhooks, settings))
    if listeners.registry is not None:
        # The registry app owns the registry and closes it when it is cleaned up.
        app = create_app(registry, settings, scheduled=listeners.first)
        runners.append(await _start(app, listeners.registry, settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()
    if listeners.registry is None:
        await registry.close()


def run_worker(settings: Settings, listeners: Listeners) -> None:
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve_worker(settings, listeners))


_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux); exit at once
    if the parent is already gone (it died before the request was made)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(0)


def _run_forked_worker(settings: Settings, listeners: Listeners, parent: int) -> None:
    _stop_with_parent(parent)
    run_worker(settings, listeners)


def _prepare(settings: Settings) -> None:
    """Once, before the workers start: create the data directory, bring the database schema
    up to date, install the configured tag policy, and read the htpasswd file and build the
    admission webhooks once so that unusable settings stop here with a message, not in a
    loop of crashing workers."""
    if settings.auth.htpasswd is not None:
        load_htpasswd(settings.auth.htpasswd)  # DocumentError, OSError
    if uses_data_directory(settings):
        settings.data.mkdir(parents=True, exist_ok=True)

    async def prepare() -> None:
        if settings.metadata.backend == "postgres" and settings.metadata.migrate:
            before, after = await migrate(settings)
            if before != after:
                log.info("metadata schema migrated from version %d to %d", before, after)
        registry = build_registry(settings)
        try:
            await registry.meta.connect()
            if settings.storage.driver != "memory":
                await install_configured_policy(registry, settings)
            if settings.webhook.listen is not None:
                try:
                    admission = build_admission(settings, registry)
                except (ValueError, ResolveError) as exc:  # unreadable files, no cluster...
                    raise StartupError(str(exc)) from None
                await admission.close()
        finally:
            await registry.close()

    try:
        asyncio.run(prepare())
    except MetadataUnavailable as exc:  # unreachable, or a schema of another version
        raise StartupError(str(exc)) from None


def serve(settings: Settings, *, registry_api: bool = True, ready: Any = None) -> int:
    """Run until SIGTERM/SIGINT: the registry API (unless ``registry_api`` is False) and, with
    ``settings.webhook.listen``, the admission webhooks. ``ready`` is called once serving."""
    if not settings.metrics.enabled:
        return _serve(settings, registry_api, ready)
    # Fresh for this family of processes: a directory of an earlier run (or of another
    # registry on the same data) would add its counts to these.
    directory = Path(tempfile.mkdtemp(prefix="moorage-metrics-"))
    try:
        metrics.share_between_processes(directory)
        return _serve(settings, registry_api, ready)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _serve(settings: Settings, registry_api: bool, ready: Any) -> int:
    _prepare(settings)
    count = settings.workers
    registry_sockets = bind(settings.listen, count) if registry_api else [None] * count
    webhook_sockets: list[socket.socket | None] = [None] * count
    if settings.webhook.listen is not None:
        webhook_sockets = list(bind(settings.webhook.listen, count))
    listeners = [
        Listeners(r, w, first=index == 0)
        for index, (r, w) in enumerate(zip(registry_sockets, webhook_sockets, strict=True))
    ]
    for name, sock in (("registry", listeners[0].registry), ("webhooks", listeners[0].webhooks)):
        if sock is not None:
            host, port = sock.getsockname()[:2]
            scheme = "https" if settings.tls.cert else "http"
            log.info("moorage %s on %s://%s:%s", name, scheme, host, port)
    log.info("%d worker(s), %s", count, describe_backends(settings))
    if count == 1:
        if ready is not None:
            ready()
        run_worker(settings, listeners[0])
        return 0
    return _supervise(settings, listeners, ready)


#: A worker that exits within this many seconds of starting died "quickly"; after this many
#: quick deaths in a row the supervisor stops instead of restarting workers forever.
_QUICK_DEATH = 2.0
_MAX_QUICK_DEATHS = 5


def _supervise(settings: Settings, listeners: list[Listeners], ready: Any) -> int:
    context = multiprocessing.get_context("fork")
    stopping = failed = False

    started: dict[int, float] = {}
    quick_deaths = 0

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_run_forked_worker, args=(settings, listeners[index], os.getpid())
        )
        process.start()
        started[index] = time.monotonic()
        return process

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers = [start(index) for index in range(settings.workers)]
    if ready is not None:
        ready()
    while not stopping:
        time.sleep(0.2)
        for index, process in enumerate(workers):
            if not process.is_alive() and not stopping:
                process.join()
                if time.monotonic() - started[index] < _QUICK_DEATH:
                    quick_deaths += 1
                else:
                    quick_deaths = 0
                if quick_deaths >= _MAX_QUICK_DEATHS:
                    log.error(
                        "workers keep exiting right after they start (last: %s); giving up",
                        process.exitcode,
                    )
                    stopping = failed = True
                    break
                log.error("worker %s exited with %s; restarting", process.pid, process.exitcode)
                if process.pid is not None:
                    metrics.forget_process(process.pid)
                workers[index] = start(index)
    for process in workers:
        if process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    for process in workers:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
    for group in listeners:
        for sock in group.sockets():
            sock.close()
    return 1 if failed else 0
