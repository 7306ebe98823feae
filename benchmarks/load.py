"""Manifest requests under load: ``run_load`` warms up, then drives one registry for
``--duration`` seconds with wrk (GET) or ApacheBench (HEAD, and GET again), measuring CPU as
it goes, and ``parse_wrk``/``parse_ab`` turn the tools' text output into a ``LoadResult``
(requests/s, p50 and p99 latency, errors, keep-alive). ``LOAD_METRICS`` lists the three
measurements the run makes."""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from cpu import CpuMeter, quiesce
from errors import BenchmarkError
from registry_http import OCI_MANIFEST
from servers import Server

# wrk 4.1.0 cannot do HEAD: its HTTP parser is not told that a HEAD response has no body, so it
# waits for Content-Length bytes that never come (wg/wrk#198; every run ends with 0 requests).
# HEAD is therefore measured with ApacheBench (`ab -i`), and GET with ab too, so the two
# methods can be compared with the same tool; wrk's GET remains the headline number.

# (result key, method, load generator) of the manifest-by-tag measurements.
LOAD_METRICS = (
    ("manifest_get", "GET", "wrk"),
    ("manifest_head", "HEAD", "ab"),
    ("manifest_get_ab", "GET", "ab"),
)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if match is None:
        raise BenchmarkError(f"cannot parse wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class LoadResult:
    tool: str
    requests_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    keepalive: int
    cpu: dict[str, float] = field(default_factory=dict)
    processes: list[float] = field(default_factory=list)
    raw: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        """The result as it is kept in the JSON output."""
        return {
            "tool": self.tool,
            "requests_s": self.requests_s,
            "requests": self.requests,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "errors": self.errors,
            "non_2xx": self.non_2xx,
            "keepalive": self.keepalive,
            "cpu_pct": self.cpu,
            "process_cpu_pct": self.processes,
            "output": self.raw,
        }


def parse_wrk(output: str) -> LoadResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and total and p50 and p99):
        raise BenchmarkError(f"cannot parse wrk output:\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(total.group(1))
    return LoadResult(
        tool="wrk",
        requests_s=float(rps.group(1)),
        requests=requests,
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        keepalive=requests,  # wrk always keeps connections alive
    )


def parse_ab(output: str) -> LoadResult:
    def number(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output, re.M)
        if match is None:
            if default is None:
                raise BenchmarkError(f"cannot parse ab output:\n{output}")
            return default
        return match.group(1)

    return LoadResult(
        tool="ab",
        requests_s=float(number(r"Requests per second:\s+([\d.]+)")),
        requests=int(number(r"Complete requests:\s+(\d+)")),
        # ab prints its percentiles in whole milliseconds.
        p50_ms=float(number(r"^\s+50%\s+(\d+)")),
        p99_ms=float(number(r"^\s+99%\s+(\d+)")),
        errors=int(number(r"Failed requests:\s+(\d+)")),
        non_2xx=int(number(r"Non-2xx responses:\s+(\d+)", "0")),
        keepalive=int(number(r"Keep-Alive requests:\s+(\d+)", "0")),
    )


def load_argv(tool: str, method: str, duration: int, args: argparse.Namespace) -> list[str]:
    """wrk (GET only) or ab loading a URL, to be appended, for ``duration`` seconds with
    ``--connections`` (and wrk's ``--wrk-threads``), asking for an OCI manifest."""
    accept = f"Accept: {OCI_MANIFEST}"
    connections = args.connections
    if tool == "wrk":
        if method != "GET":
            raise BenchmarkError("wrk 4.1 cannot send HEAD requests (wg/wrk#198)")
        threads = f"-t{args.wrk_threads}"
        return ["wrk", threads, f"-c{connections}", f"-d{duration}s", "--latency", "-H", accept]
    head = ["-i"] if method == "HEAD" else []
    # -t alone caps ab at 50,000 requests; -n after it raises the cap (ab allocates
    # 32 bytes per request up front). -r: go on after a failed receive instead of exiting.
    options = f"-q -k -r -c {connections} -t {duration} -n {200_000 * duration}".split()
    return ["ab", *options, "-H", accept, *head]


def load_output(tool: str, method: str, url: str, duration: int, args: argparse.Namespace) -> str:
    """Load ``url`` for ``duration`` seconds (``load_argv``); the tool's output."""
    argv = [*load_argv(tool, method, duration, args), url]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchmarkError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def parse_load(tool: str, output: str) -> LoadResult:
    return parse_wrk(output) if tool == "wrk" else parse_ab(output)


def run_load(
    server: Server, target: str, method: str, tool: str, args: argparse.Namespace
) -> LoadResult:
    """Warm up, then load ``target`` for ``--duration`` seconds with wrk or ab."""
    url = server.url(target)

    def load(duration: int) -> str:
        return load_output(tool, method, url, duration, args)

    server.check_alive()
    quiesce(args.wait_idle)
    if args.warmup > 0:
        load(args.warmup)
    with CpuMeter(server.proc.pid) as cpu:
        output = load(args.duration)
    server.check_alive()
    result = parse_load(tool, output)
    result.cpu, result.raw = cpu.percent, output
    # How the load spread over the server's processes (moorage: supervisor and workers).
    result.processes = [100 * used / args.duration for used in cpu.server_processes.values()]
    if result.requests == 0:
        raise BenchmarkError(f"{tool} {method} against {server.label} completed no request")
    return result
