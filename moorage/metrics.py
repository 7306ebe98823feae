"""Prometheus metrics: what is measured, recording it cheaply, and the text ``/metrics`` serves.

Every process of ``moorage serve`` records its own. The parent gives the workers a fresh
directory (``share_between_processes``); prometheus-client's multiprocess mode keeps each
process's values in a memory-mapped file there, and a scrape of any worker sums them all.
Counters of a worker that died stay in the sums; its in-flight gauge is dropped
(``forget_process``).

The hot paths (every request, every metadata operation) never call prometheus-client: in
multiprocess mode its ``inc`` costs about 1.4 µs and a histogram's ``observe`` 3.5 µs (a lock,
a pid check, a write to the mapped file), a tenth of a manifest GET. Requests add to plain
counters of this process instead (``RequestSeries``: an append and an addition), and
metadata operations are timed by sampling (``SampledOperations``: a flag read on the calls
not sampled). ``Metrics.flush`` writes the pending counts to the shared files every
``FLUSH_INTERVAL`` seconds and before every scrape, so a scrape lags other workers by at
most that. The rare events (a tag refused, an admission review, a cache lookup of a remote
tag) are recorded directly.

Labels take values from small fixed sets (the endpoint kind, never the path; methods outside
the usual ones count as ``other``), or from the configuration (tag policy rule names), so no
client can make the number of series grow.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger("moorage.metrics")

T = TypeVar("T")
C = TypeVar("C")

#: What ``/metrics`` answers: the Prometheus text format.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: Seconds between two writes of a process's pending counts to the shared files.
FLUSH_INTERVAL = 1.0
#: The variable prometheus-client reads its multiprocess directory from.
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Upper bounds of the request latency buckets, in seconds: manifest and blob requests on a
#: fast path take a fraction of a millisecond; big uploads take minutes (the +Inf bucket).
REQUEST_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf")),
)
#: Of metadata operations: an SQLite read takes tens of microseconds, a write waits for its
#: group commit's fsync, PostgreSQL adds a round trip.
STORE_BUCKETS = (
    *(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf")),
)
#: Of admission reviews: a local tag is one metadata read, a remote one a round trip.
REVIEW_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, float("inf")),
)

#: Request methods counted under their own name; any other is ``other``.
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
#: The rule label of a refusal by the policy's default (no rule matched).
DEFAULT_RULE = "(default)"


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: ``/metrics`` on the registry's and the webhooks' listeners."""

    #: Serve ``/metrics`` and record request and metadata metrics (off: neither).
    enabled: bool = True


def _write_histogram(child: Histogram, total: float, buckets: list[int]) -> None:
    """Add observations counted by bucket to a histogram's series: prometheus-client has no
    call for that, so this writes its values (``_sum`` and the per-bucket ``_buckets``,
    not cumulative) the way ``observe`` does. ``tests/test_metrics.py`` checks the result
    against ``observe``."""
    child._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)
            buckets[index] = 0


class Series:
    """One histogram series' observations not yet written to it."""

    __slots__ = ("_bounds", "_buckets", "_child", "_total")

    def __init__(self, child: Histogram, bounds: tuple[float, ...]) -> None:
        self._child = child
        self._bounds = bounds
        self._buckets = [0] * len(bounds)
        self._total = 0.0

    def observe(self, seconds: float) -> None:
        self._total += seconds
        self._buckets[bisect_left(self._bounds, seconds)] += 1

    def flush(self) -> None:
        if self._total or any(self._buckets):
            _write_histogram(self._child, self._total, self._buckets)
            self._total = 0.0


class _Gate:
    """Whether the next call of one operation is to be timed."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class SampledOperations:
    """Times a sample of the calls of a class's coroutine methods: ``subclass`` makes a
    subclass of it whose methods ``names`` each time their first call after an ``arm``
    (``Metrics.flush``: every ``FLUSH_INTERVAL`` seconds) and pass the others straight on.
    Each operation of each process is thus timed at most once a second, and an operation
    rarer than that at every call.

    The cost of a call not timed is one plain function call with the method's own
    parameters (a flag read, no coroutine around the method: ``_sampled``). Neither the
    instances nor the class change afterwards: patching methods onto an instance gives it a
    materialised ``__dict__``, after which CPython 3.11 no longer specialises method lookups
    on it, and changing a class's attributes every second would invalidate its type version
    as often (CPython 3.12 stops giving a class new versions after a thousand).
    """

    def __init__(self, names: Iterable[str], histogram: Histogram, bounds: tuple[float, ...]):
        self._series = {name: Series(histogram.labels(name), bounds) for name in names}
        self._gates = {name: _Gate() for name in self._series}

    def subclass(self, cls: type[C]) -> type[C]:
        """A subclass of ``cls`` (same name and module) with the operations timed."""
        namespace: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        for name, series in self._series.items():
            namespace[name] = _sampled(getattr(cls, name), self._gates[name], series)
        return type(cls.__name__, (cls,), namespace)

    def arm(self) -> None:
        for gate in self._gates.values():
            gate.open = True

    def flush(self) -> None:
        for series in self._series.values():
            series.flush()


def _sampled(
    function: Callable[..., Awaitable[T]], gate: _Gate, series: Series
) -> Callable[..., Awaitable[T]]:
    """``function`` (a coroutine function), timing the call that finds ``gate`` open.

    The wrapper is made from source (as ``dataclasses`` makes methods) with exactly
    ``function``'s parameters, which it passes on as they are declared: a wrapper taking
    ``*args, **kwargs`` builds a tuple and a dict on every call and costs three times as much,
    on every call of the hottest operations (a manifest GET's tag lookup among them)."""

    async def timed(call: Awaitable[T]) -> T:
        start = perf_counter()
        try:
            return await call
        finally:
            series.observe(perf_counter() - start)

    signature = inspect.signature(function)
    namespace: dict[str, Any] = {"_gate": gate, "_function": function, "_timed": timed}
    parameters, arguments = [], []
    for parameter in signature.parameters.values():
        name = parameter.name
        if name in namespace or name.startswith("_default_"):
            raise ValueError(f"{function.__qualname__}: a parameter named {name} is not wrapped")
        arguments.append(_FORWARD[parameter.kind].format(name))
        if parameter.default is not parameter.empty:
            namespace[f"_default_{name}"] = parameter.default
            parameter = parameter.replace(default=_Source(f"_default_{name}"))
        parameters.append(parameter.replace(annotation=parameter.empty))
    heading = signature.replace(parameters=parameters, return_annotation=signature.empty)
    call = f"_function({', '.join(arguments)})"
    source = (
        f"def operation{heading}:\n"
        "    if _gate.open:\n"
        "        _gate.open = False\n"
        f"        return _timed({call})\n"
        f"    return {call}\n"
    )
    exec(source, namespace)  # names and defaults come from the class's own code, not input
    return functools.update_wrapper(namespace["operation"], function)


class _Source:
    """A default value shown by the name it is bound to in the generated source."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: How a wrapper passes on a parameter of each kind.
_FORWARD = {
    inspect.Parameter.POSITIONAL_ONLY: "{}",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "{}",
    inspect.Parameter.VAR_POSITIONAL: "*{}",
    inspect.Parameter.KEYWORD_ONLY: "{0}={0}",
    inspect.Parameter.VAR_KEYWORD: "**{}",
}


class RequestSeries:
    """The requests of one route, method and status not yet written: their latencies (one
    entry per request) and body bytes.

    The dispatcher adds to ``latencies``, ``received`` and ``sent`` directly (``record`` is
    the same as a call). A request thus costs an append and an addition or two; counting it
    into buckets waits for ``flush``, which sorts the second's latencies once and finds each
    bucket's count by bisection, cheaper than a bisection per request.
    """

    __slots__ = ("_duration", "_received", "_requests", "_sent", "latencies", "received", "sent")

    def __init__(
        self, requests: Counter, duration: Histogram, received: Counter, sent: Counter
    ) -> None:
        self._requests = requests
        self._duration = duration
        self._received = received
        self._sent = sent
        self.latencies: list[float] = []
        self.received = 0
        self.sent = 0

    def record(self, seconds: float, received: int, sent: int) -> None:
        """One request answered after ``seconds``, having read ``received`` bytes of body and
        sent ``sent``."""
        self.latencies.append(seconds)
        self.received += received
        self.sent += sent

    def flush(self) -> None:
        latencies = self.latencies
        if not latencies:
            return
        self.latencies = []
        self._requests.inc(len(latencies))
        latencies.sort()
        buckets, below = [], 0
        for bound in REQUEST_BUCKETS:  # a latency equal to a bound is in that bound's bucket
            up_to = bisect_right(latencies, bound)
            buckets.append(up_to - below)
            below = up_to
        _write_histogram(self._duration, sum(latencies), buckets)
        if self.received:
            self._received.inc(self.received)
            self.received = 0
        if self.sent:
            self._sent.inc(self.sent)
            self.sent = 0


class Metrics:
    """Every metric of this process. ``current()`` is the one the code records into."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "moorage_http_requests_total",
            "Registry API requests answered, by endpoint kind, method and status.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.http_duration = Histogram(
            "moorage_http_request_duration_seconds",
            "Time to answer a registry API request, body included, by endpoint kind and method.",
            ("route", "method"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.http_received = Counter(
            "moorage_http_received_bytes_total",
            "Request body bytes the registry API read, by endpoint kind.",
            ("route",),
            registry=registry,
        )
        self.http_sent = Counter(
            "moorage_http_sent_bytes_total",
            "Response body bytes the registry API sent, by endpoint kind.",
            ("route",),
            registry=registry,
        )
        self.uploads_in_flight = Gauge(
            "moorage_uploads_in_flight",
            "Upload requests (POST, PATCH, PUT) being received now, in live processes.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.tag_refusals = Counter(
            "moorage_tag_refusals_total",
            "Tag changes refused by the tag policy (pushes, deletions, restores), by the rule "
            f"that made the tag immutable ({DEFAULT_RULE!r}: the policy's default).",
            ("rule",),
            registry=registry,
        )
        self.admission_reviews = Counter(
            "moorage_admission_reviews_total",
            "Admission reviews answered, by webhook (mutate, validate) and outcome (allowed, "
            "patched, denied, error).",
            ("webhook", "outcome"),
            registry=registry,
        )
        self.admission_duration = Histogram(
            "moorage_admission_review_duration_seconds",
            "Time to answer an admission review, by webhook.",
            ("webhook",),
            buckets=REVIEW_BUCKETS,
            registry=registry,
        )
        self.resolver_cache = Counter(
            "moorage_resolver_cache_lookups_total",
            "Lookups of other registries' tags in the pinning webhook's cache, by result "
            "(hit, miss).",
            ("result",),
            registry=registry,
        )
        self.upstream_errors = Counter(
            "moorage_resolver_upstream_errors_total",
            "Failures to resolve a tag in another registry, by reason (timeout, tls, "
            "connection, request, answer: it answered without a usable digest).",
            ("reason",),
            registry=registry,
        )
        self.store_duration = Histogram(
            "moorage_metadata_operation_duration_seconds",
            "Time of metadata store operations, by operation (the store's method); at most "
            "one call of each per process and second is timed.",
            ("operation",),
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self._sampled: list[SampledOperations] = []
        #: The series of the requests of each (endpoint kind, method, status) seen so far,
        #: which ``flush`` writes; ``request_series`` adds the missing ones. (The dispatcher
        #: keeps references to them by endpoint and status, a cheaper key than this one.)
        self.requests: dict[tuple[str, str, int], RequestSeries] = {}

    def request_series(self, route: str, method: str, status: int) -> RequestSeries:
        """The series requests of ``route`` (an endpoint kind), ``method`` and ``status``
        add to, kept in ``requests`` (unless ``method`` is an unusual one: they share
        ``other``, and are looked up here each time)."""
        key = (route, method if method in METHODS else "other", status)
        found = self.requests.get(key)
        if found is None:
            found = self.requests[key] = RequestSeries(
                self.http_requests.labels(route, key[1], str(status)),
                self.http_duration.labels(route, key[1]),
                self.http_received.labels(route),
                self.http_sent.labels(route),
            )
        return found

    def timed_operations(self, cls: type[C], names: Iterable[str]) -> type[C]:
        """A subclass of ``cls`` that times a sample of the calls of its coroutine methods
        ``names``, in ``moorage_metadata_operation_duration_seconds`` by name
        (``SampledOperations``)."""
        sampled = SampledOperations(names, self.store_duration, STORE_BUCKETS)
        self._sampled.append(sampled)
        return sampled.subclass(cls)

    def flush(self) -> None:
        """Write this process's pending counts where scrapes read them (and arm the sampled
        operations again)."""
        for series in self.requests.values():
            series.flush()
        for sampled in self._sampled:
            sampled.flush()
            sampled.arm()

    def exposition(self) -> bytes:
        """The text of ``/metrics``: every process's metrics when they are shared, else this
        one's."""
        self.flush()
        if _directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(merged, path=str(_directory))  # type: ignore[no-untyped-call]
        return generate_latest(merged)


_current: Metrics | None = None
_directory: Path | None = None


def current() -> Metrics:
    """This process's metrics (made on first use, after ``share_between_processes``)."""
    global _current
    if _current is None:
        _current = Metrics()
    return _current


def share_between_processes(directory: Path) -> None:
    """Keep the metrics of this process and of the processes it forks in ``directory``
    (empty, and used by this family of processes only), so that any of them serves the sum.

    Call it before anything records. prometheus-client chooses how it stores values when it
    is first imported, from ``PROMETHEUS_MULTIPROC_DIR``; this process imported it earlier,
    so its choice is made again here.
    """
    global _current, _directory
    os.environ[DIRECTORY_VARIABLE] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _directory = directory
    _current = None


def forget_process(pid: int) -> None:
    """A process that shared its metrics has died: its gauges no longer count (its counters
    and histograms still do)."""
    if _directory is not None:
        mark_process_dead(pid, str(_directory))  # type: ignore[no-untyped-call]


async def flush_periodically() -> None:
    """Write this process's pending counts every ``FLUSH_INTERVAL`` seconds, for ever."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            current().flush()
        except Exception:
            log.exception("writing the metrics failed")
