"""Admission webhook throughput and latency: AdmissionReview requests to ``/mutate`` over HTTPS.

The entry point: it makes a CA and a serving certificate with ``moorage certs``, starts
``moorage serve --webhook-listen`` (registry API and webhooks, ``--workers`` processes, HTTPS
for both) on 127.0.0.1 with its data in a temporary directory, pushes 5 small images
(``registry_http.push_image``, over HTTPS), and sends AdmissionReview v1 requests for a
Deployment with 5 containers, whose tags are all resolved from the registry's own metadata,
with wrk over ``--connections`` keep-alive HTTPS connections. wrk runs a generated Lua script:
it cycles through 64 reviews (distinct uids) and checks every response byte for byte (200,
allowed, the uid, the 5-operation JSONPatch checked once in Python), and counts the failures.

Each workload is measured two ways, ``--duration`` seconds each after a ``--warmup``:

- saturated: every connection sends its next review as soon as the answer arrives (the
  maximum reviews/s; latency then is mostly queueing: connections / throughput);
- paced at ``--rate`` reviews/s: each connection waits between reviews (wrk's ``delay()``;
  the warm-up calibrates the wait), the latency a review sees at that load.

Workloads: /mutate with pins recorded (what the API server sends), the same as a dry run (no
pins: the cost of recording), and, unless ``--no-webhook-only``, /mutate on ``moorage webhook
serve`` (webhooks only) on the same data. The pins table is checked after each run: 5 pins per
answered review (reviews cut off at the end of a run may add some), none for dry runs.
README.md says what is measured and how.
Usage: .venv/bin/python benchmarks/admission.py [--duration 10] [--connections 16]
       [--rate 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from checkout import VENV_BIN, describe
from cpu import CpuMeter, machine_busy_percent, quiesce
from errors import BenchmarkError, check_tools, exit_status, tool_output
from load import LoadResult, parse_wrk
from registry_http import push_image
from report import DISTURBED_PCT, aligned, cpu_split, per_process, print_and_save
from servers import Server, free_port, spawn, wait_ready

IMAGES = 5
NAMESPACE = "bench"
#: Reviews the wrk script cycles through (each with its own uid).
BODIES = 64
#: The targets this benchmark checks.
TARGET_P99_MS = 5.0
TARGET_REVIEWS_S = 1000.0


# -- the servers -----------------------------------------------------------------------------------


@dataclass
class HttpsServer(Server):
    """A moorage process serving HTTPS: its registry API on ``port`` (unless webhooks only),
    its webhooks on ``webhook_port``; ``registry_http`` reaches it through ``connection``."""

    ca: Path = field(default_factory=Path)
    webhook_port: int = 0

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @cached_property
    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        return self.https(self.port, timeout)

    def https(self, port: int, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=self.context)

    def get(self, port: int, path: str) -> int:
        conn = self.https(port, 5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = self.https(self.webhook_port, 30)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(moorage: Path, directory: Path) -> Certs:
    tool_output(
        [str(moorage), "certs", "--out", str(directory), "--ip", "127.0.0.1"],
        "moorage certs failed",
    )
    return Certs(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")


def start(
    work: Path,
    name: str,
    argv: list[str],
    certs: Certs,
    *,
    port: int,
    data: Path,
    ready_path: tuple[str, str],
) -> HttpsServer:
    """Run ``argv`` (a moorage command) with ``--webhook-listen`` and TLS added, in a session
    of its own; wait until ``ready_path`` ("registry" or "webhooks", path) answers 200."""
    webhook_port = free_port()
    argv = [
        *argv,
        "--webhook-listen", f"127.0.0.1:{webhook_port}",
        "--tls-cert", str(certs.cert),
        "--tls-key", str(certs.key),
    ]  # fmt: skip
    log = work / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    server = HttpsServer("moorage", port, data, log, spawn(argv, log, env), certs.ca, webhook_port)
    which, path = ready_path
    ready_port = port if which == "registry" else webhook_port
    wait_ready(server, lambda: server.get(ready_port, path) == 200, f"{name} did not answer {path}")
    return server


def start_serve(moorage: Path, work: Path, certs: Certs, workers: int) -> HttpsServer:
    port, data = free_port(), work / "data"
    data.mkdir()
    argv = [str(moorage), "serve", "--listen", f"127.0.0.1:{port}", "--data", str(data)]
    argv += ["--workers", str(workers)]
    return start(work, "serve", argv, certs, port=port, data=data, ready_path=("registry", "/v2/"))


def start_webhook_only(
    moorage: Path, work: Path, certs: Certs, workers: int, registry: HttpsServer
) -> HttpsServer:
    """``moorage webhook serve`` on the registry's data; its ``--listen`` is the registry's
    address, so the images written with it are this registry's (nothing binds it)."""
    argv = [str(moorage), "webhook", "serve", "--listen", f"127.0.0.1:{registry.port}"]
    argv += ["--data", str(registry.data), "--workers", str(workers)]
    return start(
        work,
        "webhook-serve",
        argv,
        certs,
        port=registry.port,
        data=registry.data,
        ready_path=("webhooks", "/healthz"),
    )


# -- the reviews -----------------------------------------------------------------------------------


def images(server: HttpsServer) -> list[str]:
    return [f"127.0.0.1:{server.port}/bench/app{i}:v1" for i in range(IMAGES)]


def deployment(image_list: list[str]) -> dict[str, Any]:
    """A Deployment as the API server sends it (defaults filled in), one container per image."""
    labels = {"app": "web", "team": "bench"}
    containers = [
        {
            "name": f"app{i}",
            "image": image,
            "ports": [{"containerPort": 8080 + i, "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "production"}, {"name": "SHARD", "value": str(i)}],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "256Mi"},
            },
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": 8080 + i, "scheme": "HTTP"},
                "timeoutSeconds": 1,
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }
        for i, image in enumerate(image_list)
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": NAMESPACE,
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": containers,
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }


def review(obj: dict[str, Any], uid: str, *, dry_run: bool) -> bytes:
    group = {"group": "apps", "version": "v1"}
    request = {
        "uid": uid,
        "kind": {**group, "kind": "Deployment"},
        "resource": {**group, "resource": "deployments"},
        "requestKind": {**group, "kind": "Deployment"},
        "requestResource": {**group, "resource": "deployments"},
        "name": "web",
        "namespace": NAMESPACE,
        "operation": "CREATE",
        "userInfo": {"username": "bench@example.com", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    document = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Expected:
    """What every answer must be: ``prefix`` + the request's uid + ``suffix``."""

    prefix: bytes
    suffix: bytes
    body_bytes: int


def check_answer(
    server: HttpsServer, image_list: list[str], digests: list[str], dry_run: bool
) -> Expected:
    """Send one review and check its answer in full: allowed, the uid, a JSONPatch of exactly
    one replace per container with the pushed digest. The answer's bytes around the uid are
    what the wrk script compares every answer with."""
    uid = str(uuid.uuid4())
    body = review(deployment(image_list), uid, dry_run=dry_run)
    status, raw = server.post("/mutate", body)
    if status != 200:
        raise BenchmarkError(f"/mutate answered {status}: {raw[:300]!r}")
    answer = json.loads(raw)
    response = answer.get("response", {})
    if answer.get("kind") != "AdmissionReview" or response.get("uid") != uid:
        raise BenchmarkError(f"/mutate answered {raw[:300]!r}")
    if response.get("allowed") is not True or response.get("patchType") != "JSONPatch":
        raise BenchmarkError(f"/mutate did not admit with a patch: {raw[:500]!r}")
    patch = json.loads(base64.b64decode(response["patch"]))
    wanted = [
        {
            "op": "replace",
            "path": f"/spec/template/spec/containers/{i}/image",
            "value": f"{image}@{digest}",
        }
        for i, (image, digest) in enumerate(zip(image_list, digests, strict=True))
    ]
    if patch != wanted:
        raise BenchmarkError(f"/mutate patched {patch}, expected {wanted}")
    marker = f'"uid": "{uid}"'.encode()
    if raw.count(marker) != 1:
        raise BenchmarkError(f"cannot find the uid in {raw[:300]!r}")
    before, after = raw.split(marker)
    return Expected(before + b'"uid": "', b'"' + after, len(body))


def lua_string(data: bytes) -> str:
    text = data.decode()
    if "]==]" in text:
        raise BenchmarkError("a review contains ]==]")
    return f"[==[{text}]==]"


def wrk_script(bodies: list[bytes], expected: Expected, delay_ms: float | None) -> str:
    """The Lua script: POST the reviews in turn, check every answer, report the counts."""
    table = ",\n".join(lua_string(b) for b in bodies)
    pacing = ""
    if delay_ms is not None:
        whole = int(delay_ms)
        pacing = f"""
local whole, fraction = {whole}, {delay_ms - whole:.4f}
function delay()
  if math.random() < fraction then return whole + 1 end
  return whole
end
"""
    return f"""-- generated by benchmarks/admission.py
local bodies = {{
{table}
}}
local prefix = {lua_string(expected.prefix)}
local suffix = {lua_string(expected.suffix)}
local prepared = {{}}
local next_index = 0
local threads = {{}}
ok, bad, first_bad = 0, 0, ""

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local headers = {{["Content-Type"] = "application/json"}}
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", "/mutate", headers, body)
  end
  next_index = math.random(#prepared) - 1
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

function response(status, headers, body)
  if status == 200 and #body == #prefix + 36 + #suffix
      and body:sub(1, #prefix) == prefix and body:sub(-#suffix) == suffix then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. body:sub(1, 300) end
  end
end
{pacing}
function done(summary, latency, requests)
  local total_ok, total_bad, sample = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_bad = total_bad + thread:get("bad")
    local first = thread:get("first_bad")
    if sample == "" and first ~= "" then sample = first end
  end
  io.write(string.format("verified: ok %d bad %d\\n", total_ok, total_bad))
  if sample ~= "" then io.write("first bad answer: " .. sample .. "\\n") end
end
"""


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured workload: wrk's numbers, the checks, the pins it recorded."""

    label: str
    mode: str
    load: LoadResult
    verified_ok: int
    verified_bad: int
    pins: int
    delay_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "mode": self.mode,
            "delay_ms": self.delay_ms,
            "verified_ok": self.verified_ok,
            "verified_bad": self.verified_bad,
            "pins_recorded": self.pins,
            **self.load.to_json(),
        }


def count_pins(data: Path) -> int:
    """Rows in the pins table, once the background recording has settled."""
    last, stable_since = -1, time.monotonic()
    while True:
        with sqlite3.connect(f"file:{data / 'moorage.db'}?mode=ro", uri=True) as db:
            count = int(db.execute("SELECT COUNT(*) FROM pins").fetchone()[0])
        now = time.monotonic()
        if count != last:
            last, stable_since = count, now
        elif now - stable_since >= 0.5:
            return count
        time.sleep(0.1)


def verified_counts(output: str) -> tuple[int, int]:
    for line in output.splitlines():
        if line.startswith("verified: "):
            _, _, ok, _, bad = line.split()
            return int(ok), int(bad)
    raise BenchmarkError(f"the wrk script reported nothing:\n{output}")


def wrk(
    server: HttpsServer, script: Path, duration: int, args: argparse.Namespace
) -> tuple[str, LoadResult]:
    argv = [
        "wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{duration}s",
        "--timeout", "10s", "--latency", "-s", str(script),
        f"https://127.0.0.1:{server.webhook_port}/mutate",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchmarkError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout, parse_wrk(proc.stdout)


def measure(
    server: HttpsServer,
    label: str,
    bodies: list[bytes],
    expected: Expected,
    work: Path,
    args: argparse.Namespace,
    *,
    paced: bool,
    records_pins: bool,
) -> Run:
    """Warm up (calibrating the pacing), then load the webhooks for ``--duration`` seconds."""
    script = work / "reviews.lua"
    delay_ms: float | None = None
    if paced:
        # A connection's cycle is its latency plus the delay: one paced warm-up says how long
        # the latency is at about this load, and the delay is set to make up the rest.
        delay_ms = 1000 * args.connections / args.rate
        script.write_text(wrk_script(bodies, expected, delay_ms))
        _, warm = wrk(server, script, max(args.warmup, 2), args)
        latency_ms = max(0.0, 1000 * args.connections / warm.requests_s - delay_ms)
        delay_ms = max(0.0, delay_ms - latency_ms)
    script.write_text(wrk_script(bodies, expected, delay_ms))
    if not paced and args.warmup > 0:
        wrk(server, script, args.warmup, args)
    server.check_alive()
    pins_before = count_pins(server.data)
    quiesce(args.wait_idle)
    with CpuMeter(server.proc.pid) as cpu:
        output, result = wrk(server, script, args.duration, args)
    server.check_alive()
    result.cpu, result.raw = cpu.percent, output
    result.processes = [100 * used / args.duration for used in cpu.server_processes.values()]
    ok, bad = verified_counts(output)
    pins = count_pins(server.data) - pins_before
    run = Run(label, "paced" if paced else "saturated", result, ok, bad, pins, delay_ms)
    print(
        f"  {label:<34} {run.mode:<9} {result.requests_s:7.0f} reviews/s  "
        f"p50 {result.p50_ms:5.2f} ms  p99 {result.p99_ms:6.2f} ms  "
        f"CPU % {cpu_split(result.cpu)} ({per_process(result.processes)})"
    )
    check_run(run, records_pins, args)
    return run


def check_run(run: Run, records_pins: bool, args: argparse.Namespace) -> None:
    load = run.load
    problems = []
    if load.requests == 0:
        problems.append("no review was answered")
    if run.verified_bad or load.errors or load.non_2xx:
        first_bad = [ln for ln in load.raw.splitlines() if ln.startswith("first bad answer")]
        problems.append(
            f"{run.verified_bad} wrong answers, {load.errors} socket errors, "
            f"{load.non_2xx} non-2xx {first_bad[:1]}"
        )
    if run.verified_ok != load.requests:
        problems.append(f"{run.verified_ok} answers checked, wrk counted {load.requests}")
    # wrk stops with a review in flight on every connection: the server may answer (and
    # record) up to --connections reviews more than wrk counts.
    expected = (IMAGES * load.requests, IMAGES * (load.requests + args.connections))
    if records_pins and not expected[0] <= run.pins <= expected[1]:
        problems.append(f"{run.pins} pins recorded, expected {expected[0]}-{expected[1]}")
    if not records_pins and run.pins:
        problems.append(f"{run.pins} pins recorded by dry runs")
    if problems:
        raise BenchmarkError(f"{run.label} ({run.mode}): " + "; ".join(problems))


def run_all(args: argparse.Namespace, work: Path) -> tuple[list[Run], dict[str, Any]]:
    certs = make_certs(args.moorage, work / "certs")
    servers: list[HttpsServer] = []
    try:
        serve = start_serve(args.moorage, work, certs, args.workers)
        servers.append(serve)
        image_list = images(serve)
        digests = [push_image(serve, f"bench/app{i}", "v1")[1] for i in range(IMAGES)]
        print(f"moorage serve: registry {serve.base}, webhooks on port {serve.webhook_port}")
        print(f"pushed {IMAGES} images: {', '.join(d[:19] for d in digests)}")
        obj = deployment(image_list)
        uids = [str(uuid.uuid4()) for _ in range(BODIES)]
        workloads: list[tuple[str, bool]] = [("/mutate, pins recorded", False)]
        if not args.no_dry_run:
            workloads.append(("/mutate, dry run (no pins)", True))
        runs: list[Run] = []
        setup: dict[str, Any] = {"images": image_list, "digests": digests}
        for label, dry_run in workloads:
            expected = check_answer(serve, image_list, digests, dry_run)
            bodies = [review(obj, uid, dry_run=dry_run) for uid in uids]
            setup["review_bytes"] = expected.body_bytes
            for paced in (False, True):
                runs.append(
                    measure(
                        serve,
                        f"serve: {label}",
                        bodies,
                        expected,
                        work,
                        args,
                        paced=paced,
                        records_pins=not dry_run,
                    )
                )
        if not args.no_webhook_only:
            hooks = start_webhook_only(args.moorage, work, certs, args.workers, serve)
            servers.append(hooks)
            expected = check_answer(hooks, image_list, digests, False)
            bodies = [review(obj, uid, dry_run=False) for uid in uids]
            for paced in (False, True):
                runs.append(
                    measure(
                        hooks,
                        "webhook serve: /mutate, pins recorded",
                        bodies,
                        expected,
                        work,
                        args,
                        paced=paced,
                        records_pins=True,
                    )
                )
        return runs, setup
    except BenchmarkError as exc:
        logs = "\n".join(f"--- {s.log.name} ---\n{s.log_tail()}" for s in servers)
        raise BenchmarkError(f"{exc}\n{logs}") from None
    finally:
        for server in reversed(servers):
            server.stop()


# -- the report ------------------------------------------------------------------------------------


def table(runs: list[Run], args: argparse.Namespace, review_bytes: int) -> str:
    header = ("workload", "load", "reviews/s", "p50 ms", "p99 ms", "CPU % srv/cli/oth/irq/iow")
    rows: list[tuple[str, ...]] = []
    disturbed = False
    for run in runs:
        load = run.load
        mark = ""
        if load.cpu["other"] > DISTURBED_PCT:
            mark, disturbed = " ~", True
        shape = "saturated" if run.mode == "saturated" else f"paced {args.rate:g}/s"
        rows.append(
            (
                run.label,
                shape,
                f"{load.requests_s:.0f}{mark}",
                f"{load.p50_ms:.2f}",
                f"{load.p99_ms:.2f}",
                f"{cpu_split(load.cpu)} ({per_process(load.processes)})",
            )
        )
    out = [*aligned(header, rows), ""]
    out.append(
        f"{args.workers} workers; wrk -t{args.wrk_threads} -c{args.connections} over HTTPS "
        f"keep-alive, {args.duration} s per run after a {args.warmup} s warm-up; a Deployment "
        f"of {IMAGES} containers ({review_bytes} bytes), every tag resolved from the "
        f"registry's metadata; every answer checked (allowed, uid, {IMAGES}-operation "
        "JSONPatch) and the pins counted. Saturated: each connection sends its next review at "
        "once (latency is mostly queueing, connections / rate); paced: each connection waits "
        "between reviews so that they arrive at about the rate shown. CPU % of one core "
        "(200% = both): server process tree (per process: supervisor/workers), client (wrk), "
        "other processes, interrupts, iowait."
    )
    if disturbed:
        out.append(
            f"~ other processes used more than {DISTURBED_PCT}% of a core during the run: "
            "the number is disturbed."
        )
    out.append("")
    out += targets(runs, args)
    return "\n".join(out)


def targets(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """Whether the targets are met, by the runs with pins recorded on ``moorage serve``."""
    main = [r for r in runs if r.label == "serve: /mutate, pins recorded"]
    saturated = next(r for r in main if r.mode == "saturated")
    paced = next(r for r in main if r.mode == "paced")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rate_ok = saturated.load.requests_s >= TARGET_REVIEWS_S
    p99_ok = paced.load.p99_ms <= TARGET_P99_MS and paced.load.requests_s >= 0.95 * args.rate
    return [
        f"target >= {TARGET_REVIEWS_S:.0f} reviews/s (saturated): "
        f"{saturated.load.requests_s:.0f}, {verdict(rate_ok)}",
        f"target p99 <= {TARGET_P99_MS:g} ms at {args.rate:g} reviews/s (paced): "
        f"p99 {paced.load.p99_ms:.2f} ms at {paced.load.requests_s:.0f}/s, {verdict(p99_ok)}",
    ]


# -- entry point -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--rate", type=float, default=TARGET_REVIEWS_S, help="reviews/s of the paced runs (1000)"
    )
    parser.add_argument("--no-dry-run", action="store_true", help="skip the dry-run workload")
    parser.add_argument(
        "--no-webhook-only", action="store_true", help="skip `moorage webhook serve`"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=10,
        help="before each run wait up to this many seconds for the machine to be idle (default 10)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--tmpdir", type=Path, help="where to create the work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--moorage", type=Path, default=VENV_BIN / "moorage", help="moorage binary")
    args = parser.parse_args(argv)
    if min(args.workers, args.duration, args.connections, args.wrk_threads) < 1:
        parser.error("--workers, --duration, --connections and --wrk-threads must be positive")
    if args.rate <= 0 or args.connections < args.wrk_threads:
        parser.error("--rate must be positive and --connections at least --wrk-threads")
    return args


def benchmark(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="moorage-admission-", dir=args.tmpdir))
    try:
        busy = machine_busy_percent()
        print(f"machine busy before the run: {busy:.0f}% of one core")
        runs, setup = run_all(args, work)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    print_and_save(
        table(runs, args, setup["review_bytes"]),
        started,
        args,
        environment=lambda: {
            "moorage_git": describe(),
            "python": sys.version.split()[0],
            "wrk": (wrk_version.stdout or wrk_version.stderr).strip().splitlines()[0],
            "cpus": os.cpu_count(),
        },
        busy_before_pct=busy,
        results={"runs": [r.to_json() for r in runs]},
        setup=setup,
        derived={"targets": targets(runs, args)},
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if check_tools(("wrk", str(args.moorage))):
        return 2
    return exit_status(lambda: benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
