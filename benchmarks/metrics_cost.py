"""What the metrics cost a manifest GET by tag, measured in process, without sockets.

Three registries on the filesystem and SQLite in a temporary directory, one image pushed to
each: ``[metrics] enabled = false``; enabled (requests counted by the dispatcher, a sample
of the metadata operations timed); enabled with the store's operations left alone.
The same mocked ``GET /v2/bench/image/manifests/latest`` goes to each one's
``V2Api.dispatch`` ``--calls`` times per block, the three in a rotating order, for
``--blocks`` blocks. The fastest block of each is the least disturbed by other work on the
machine; their differences are the cost per request, to set against a whole request's CPU
(``registry.py --metrics-rounds`` measures the cost through HTTP, in paired rounds).

Usage: PYTHONPATH=. .venv/bin/python benchmarks/metrics_cost.py [--blocks 60] [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from moorage.api.app import V2Api, create_app
from moorage.server import build_registry
from tests.support.app import push_image
from tests.support.images import seeded_image
from tests.support.settings import make_settings

Client = TestClient[web.Request, web.Application]

PATH = "bench/image/manifests/latest"
#: (name, [metrics] enabled, store operations counted and timed)
VARIANTS = (("off", False, False), ("on", True, True), ("requests only", True, False))


async def measure(blocks: int, calls: int) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="moorage-metrics-cost-"))
    apis: dict[str, V2Api] = {}
    clients: list[Client] = []
    try:
        for name, enabled, timed in VARIANTS:
            settings = make_settings(
                {"data": root / name, "workers": 1, "metrics": {"enabled": enabled}}
            )
            registry = build_registry(settings, timed=timed)
            client: Client = TestClient(TestServer(create_app(registry, settings)))
            await client.start_server()
            clients.append(client)
            await push_image(client, "bench/image", seeded_image("bench", layers=1), "latest")
            apis[name] = V2Api(registry, settings)
        request = make_mocked_request(
            "GET",
            f"/v2/{PATH}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            match_info={"tail": PATH},
        )
        for api in apis.values():
            if (await api.dispatch(request)).status != 200:
                raise SystemExit("the manifest GET failed")
        times: dict[str, list[float]] = {name: [] for name in apis}
        names = list(apis)
        for block in range(blocks):
            turn = block % len(names)
            for name in names[turn:] + names[:turn]:
                api = apis[name]
                started = time.perf_counter()
                for _ in range(calls):
                    await api.dispatch(request)
                times[name].append((time.perf_counter() - started) / calls * 1e6)
        return times
    finally:
        for client in clients:
            await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=60, help="blocks per variant (60)")
    parser.add_argument("--calls", type=int, default=5000, help="dispatches per block (5000)")
    args = parser.parse_args(argv)
    times = asyncio.run(measure(args.blocks, args.calls))
    fastest = {name: min(values) for name, values in times.items()}
    for name, values in times.items():
        print(
            f"{name:<14} fastest block {fastest[name]:6.2f} us per dispatch, "
            f"median {statistics.median(values):6.2f} us"
        )
    for name in ("on", "requests only"):
        print(f"{name} - off: {fastest[name] - fastest['off']:+.2f} us per manifest GET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
