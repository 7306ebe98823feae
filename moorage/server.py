"""Running the registry: building it from settings, and the pre-fork worker supervisor.

The parent process prepares the data directory and the database schema, opens one listening
socket per worker on the same address with SO_REUSEPORT, and forks the workers. The kernel
spreads new connections evenly over the sockets (one shared socket let whichever worker woke
first accept a whole burst). The parent keeps the sockets open, so a worker that dies is
replaced on the same socket and the connections waiting in its queue are not lost. Workers
share nothing in memory: everything they must agree on lives in the metadata store and
storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import time
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from moorage.api.app import create_app
from moorage.config import Settings
from moorage.meta.base import Actor
from moorage.meta.sqlite import SQLiteMetadata
from moorage.registry.service import Registry
from moorage.storage.base import StorageDriver
from moorage.storage.filesystem import FilesystemDriver
from moorage.storage.memory import MemoryDriver

log = logging.getLogger("moorage.server")


def build_registry(settings: Settings) -> Registry:
    storage: StorageDriver
    if settings.storage_driver == "memory":
        # Bytes vanish with the process, so the metadata must too.
        storage, meta = MemoryDriver(), SQLiteMetadata.temporary()
    else:
        storage, meta = (
            FilesystemDriver(settings.data / "storage"),
            SQLiteMetadata(settings.database),
        )
    return Registry(
        storage,
        meta,
        max_manifest_size=settings.manifests_max_size,
        upload_ttl=settings.uploads_ttl,
        upload_lease=settings.uploads_lease,
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def bind(settings: Settings, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address (port 0 picks a port for all of them)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    port = settings.port
    if count > 1:
        # SO_REUSEPORT would let a second registry join this port silently and take half of
        # its connections: a plain bind first fails if anything listens there already.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((settings.host, port))
            port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((settings.host, port))
            port = sock.getsockname()[1]
            sock.listen(1024)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


CONFIG_ACTOR = Actor(None, "config", "startup")


async def install_configured_policy(registry: Registry, settings: Settings) -> None:
    """Put the config file's tag policy in force if it changed since it was last installed."""
    policy = settings.configured_policy()
    if policy is not None and await registry.policies.apply_configured(
        policy, CONFIG_ACTOR, "configuration"
    ):
        log.info("tag policy from the configuration installed (%d rules)", len(policy.rules))


async def _serve_worker(settings: Settings, sock: socket.socket) -> None:
    registry = build_registry(settings)
    if settings.storage_driver == "memory":  # its metadata is this process's own
        await install_configured_policy(registry, settings)
    app = create_app(registry, settings)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("moorage.access") if settings.log_access else None,
        handle_signals=False,
    )
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=ssl_context(settings))
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def run_worker(settings: Settings, sock: socket.socket) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve_worker(settings, sock))


def _prepare(settings: Settings) -> None:
    """Once, before the workers start: create the data directory, bring the database schema
    up to date, and install the configured tag policy."""
    if settings.storage_driver == "filesystem":
        settings.data.mkdir(parents=True, exist_ok=True)

        async def prepare() -> None:
            registry = build_registry(settings)
            try:
                await install_configured_policy(registry, settings)
            finally:
                await registry.close()

        asyncio.run(prepare())


def serve(settings: Settings, ready: Any = None) -> int:
    """Run the registry until SIGTERM/SIGINT. ``ready`` is called once it accepts requests."""
    _prepare(settings)
    sockets = bind(settings, settings.workers)
    scheme = "https" if settings.tls_cert else "http"
    address = sockets[0].getsockname()
    log.info(
        "moorage listening on %s://%s:%s with %d worker(s), data in %s",
        scheme,
        address[0],
        address[1],
        settings.workers,
        settings.data,
    )
    if settings.workers == 1:
        if ready is not None:
            ready()
        run_worker(settings, sockets[0])
        return 0
    return _supervise(settings, sockets, ready)


def _supervise(settings: Settings, sockets: list[socket.socket], ready: Any) -> int:
    context = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> BaseProcess:
        process = context.Process(target=run_worker, args=(settings, sockets[index]))
        process.start()
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
                log.error("worker %s exited with %s; restarting", process.pid, process.exitcode)
                process.join()
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
    for sock in sockets:
        sock.close()
    return 0
