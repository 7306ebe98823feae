"""moorage.metrics: counts kept in memory reach the Prometheus series exactly as direct calls
would have put them there, methods and labels stay bounded, and timed operations are timed."""

from __future__ import annotations

import asyncio
import inspect
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from moorage.metrics import REQUEST_BUCKETS, Metrics, Series
from tests.support.metrics import Scrape


def test_series_flushed_equal_the_same_observations_made_directly() -> None:
    registry = CollectorRegistry()
    batched = Histogram("batched_seconds", "b", ("kind",), buckets=REQUEST_BUCKETS[:-1],
                        registry=registry)  # fmt: skip
    direct = Histogram("direct_seconds", "d", ("kind",), buckets=REQUEST_BUCKETS[:-1],
                       registry=registry)  # fmt: skip
    series = Series(batched.labels("x"), REQUEST_BUCKETS)
    chance = random.Random(7)
    # Values on the bounds too: a value equal to a bound falls into that bound's bucket.
    observed = [*REQUEST_BUCKETS[:-1], 0.0, 1e9] + [chance.expovariate(50) for _ in range(500)]
    for index, value in enumerate(observed):
        series.observe(value)
        direct.labels("x").observe(value)
        if index % 97 == 0:
            series.flush()  # several flushes add up
    series.flush()
    series.flush()  # nothing pending: nothing added
    scrape = Scrape.parse(generate_latest(registry).decode())
    for bound in [*(str(b) for b in REQUEST_BUCKETS[:-1]), "+Inf"]:
        assert scrape.value("batched_seconds_bucket", kind="x", le=bound) == scrape.value(
            "direct_seconds_bucket", kind="x", le=bound
        ), bound
    assert scrape.value("batched_seconds_count", kind="x") == len(observed)
    assert scrape.value("batched_seconds_sum", kind="x") == pytest.approx(sum(observed))


def test_request_latencies_flushed_fall_in_the_buckets_observe_would_put_them_in() -> None:
    """Requests keep their latencies unsorted until the flush counts them into buckets."""
    own = Metrics()
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=REQUEST_BUCKETS[:-1], registry=registry)
    series = own.request_series("manifest", "GET", 200)
    chance = random.Random(11)
    observed = [*REQUEST_BUCKETS[:-1], 0.0, 1e9, *REQUEST_BUCKETS[:3]]
    observed += [chance.expovariate(200) for _ in range(1000)]
    chance.shuffle(observed)
    for index, value in enumerate(observed):
        series.record(value, 0, 1)
        direct.observe(value)
        if index % 331 == 0:
            own.flush()
    own.flush()
    ours = Scrape.parse(generate_latest(own.registry).decode())
    theirs = Scrape.parse(generate_latest(registry).decode())
    name = "moorage_http_request_duration_seconds"
    for bound in [*(str(b) for b in REQUEST_BUCKETS[:-1]), "+Inf"]:
        assert ours.value(f"{name}_bucket", route="manifest", method="GET", le=bound) == (
            theirs.value("direct_seconds_bucket", le=bound)
        ), bound
    assert ours.value(f"{name}_sum", route="manifest", method="GET") == pytest.approx(sum(observed))
    assert ours.value("moorage_http_requests_total", route="manifest", method="GET",
                      status="200") == len(observed)  # fmt: skip
    assert ours.value("moorage_http_sent_bytes_total", route="manifest") == len(observed)


def test_requests_are_counted_by_route_method_and_status() -> None:
    own = Metrics()
    series = own.request_series("blob", "GET", 200)
    series.record(0.002, 0, 1000)
    series.record(0.0004, 0, 24)
    own.request_series("upload", "PUT", 201).record(0.3, 5000, 0)
    assert own.requests[("blob", "GET", 200)] is series  # the dispatcher finds it there
    own.flush()
    scrape = Scrape.parse(generate_latest(own.registry).decode())
    assert scrape.value("moorage_http_requests_total", route="blob", method="GET",
                        status="200") == 2  # fmt: skip
    assert scrape.value("moorage_http_request_duration_seconds_count", route="blob",
                        method="GET") == 2  # fmt: skip
    assert scrape.value("moorage_http_request_duration_seconds_bucket", route="blob",
                        method="GET", le="0.0005") == 1  # fmt: skip
    assert scrape.value("moorage_http_sent_bytes_total", route="blob") == 1024
    assert scrape.value("moorage_http_received_bytes_total", route="upload") == 5000
    assert scrape.value("moorage_http_requests_total", route="upload", method="PUT",
                        status="201") == 1  # fmt: skip
    own.flush()  # counted once only
    again = Scrape.parse(generate_latest(own.registry).decode())
    assert again.samples == scrape.samples


def test_unusual_methods_share_one_series_and_are_not_kept_by_name() -> None:
    own = Metrics()
    for method in ("FROB", "PROPFIND", "get"):
        own.request_series("unknown", method, 404).record(0.001, 0, 0)
    assert set(own.requests) == {("unknown", "other", 404)}
    own.flush()
    scrape = Scrape.parse(generate_latest(own.registry).decode())
    assert scrape.value("moorage_http_requests_total", route="unknown", method="other",
                        status="404") == 3  # fmt: skip


class Store:
    async def fast(self, value: int) -> int:
        return value + 1

    async def slow(self) -> None:
        await asyncio.sleep(0.03)

    async def broken(self) -> None:
        raise OSError("disk on fire")


async def test_one_call_of_each_operation_is_timed_per_flush_failures_included() -> None:
    own = Metrics()
    store = own.timed_operations(Store, ("fast", "slow", "broken"))()
    assert await store.fast(41) == 42  # timed
    assert await store.fast(1) == 2  # not: one call per flush
    await store.slow()
    await store.slow()
    with pytest.raises(OSError, match="disk on fire"):
        await store.broken()
    own.flush()  # writes, and arms every operation again
    assert await store.fast(2) == 3
    assert await store.fast(3) == 4
    own.flush()
    scrape = Scrape.parse(generate_latest(own.registry).decode())
    name = "moorage_metadata_operation_duration_seconds"
    assert scrape.value(f"{name}_count", operation="fast") == 2
    assert scrape.value(f"{name}_count", operation="slow") == 1
    assert scrape.value(f"{name}_count", operation="broken") == 1
    assert scrape.value(f"{name}_bucket", operation="slow", le="0.025") == 0
    assert 0.03 <= scrape.value(f"{name}_sum", operation="slow") < 1
    assert scrape.value(f"{name}_bucket", operation="fast", le="0.001") == 2


async def test_calls_under_way_while_one_is_timed_are_left_alone() -> None:
    own = Metrics()
    store = own.timed_operations(Store, ("slow",))()
    await asyncio.gather(*(store.slow() for _ in range(5)))
    own.flush()
    scrape = Scrape.parse(generate_latest(own.registry).decode())
    assert scrape.value("moorage_metadata_operation_duration_seconds_count",
                        operation="slow") == 1  # fmt: skip


async def test_timing_changes_neither_the_instances_nor_the_class() -> None:
    """What keeps the calls not timed cheap: CPython specialises attribute and method
    lookups on an object whose class stays the same and which keeps no methods of its own."""
    own = Metrics()
    timed = own.timed_operations(Store, ("fast", "slow"))
    store = timed()
    assert isinstance(store, Store)
    assert (timed.__name__, timed.__module__) == (Store.__name__, Store.__module__)
    assert timed.fast.__name__ == "fast" and timed.fast.__wrapped__ is Store.fast
    namespace = dict(vars(timed))
    for _ in range(3):
        assert await store.fast(1) == 2
        await store.slow()
        own.flush()
    assert dict(vars(timed)) == namespace
    assert vars(store) == {}


SHARED_DEFAULT: list[int] = []


class Signatures:
    async def mixed(
        self,
        a: int,
        /,
        b: int,
        c: int = 3,
        *rest: int,
        d: int,
        e: object = SHARED_DEFAULT,
        **more: int,
    ) -> tuple[object, ...]:
        return (a, b, c, rest, d, e, more)


async def test_operations_take_and_pass_on_their_parameters_as_declared() -> None:
    """The timed operations are made from source with the operation's own parameters."""
    own = Metrics()
    store = own.timed_operations(Signatures, ("mixed",))()
    plain = Signatures()
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((1, 2), {"d": 4}),
        ((1,), {"b": 2, "d": 4, "e": 5, "x": 6}),
        ((1, 2, 3, 7, 8), {"d": 4}),
    ]
    for _ in range(2):  # the first call of each round is timed, the others not
        for args, kwargs in calls:
            assert await store.mixed(*args, **kwargs) == await plain.mixed(*args, **kwargs)
        own.flush()
    assert (await store.mixed(1, 2, d=4))[5] is SHARED_DEFAULT  # the same object
    with pytest.raises(TypeError):
        store.mixed(1, 2)  # no d
    with pytest.raises(TypeError):
        store.mixed(a=1, b=2, d=4)  # a is positional-only
    assert inspect.signature(store.mixed) == inspect.signature(plain.mixed)
    scrape = Scrape.parse(generate_latest(own.registry).decode())
    assert scrape.value("moorage_metadata_operation_duration_seconds_count",
                        operation="mixed") == 2  # fmt: skip


def test_a_parameter_named_like_the_wrapper_s_own_names_is_refused() -> None:
    class Clash:
        async def operation(self, _gate: int) -> int:
            return _gate

    with pytest.raises(ValueError, match="named _gate"):
        Metrics().timed_operations(Clash, ("operation",))


def test_processes_sharing_a_directory_are_summed_and_dead_ones_lose_their_gauges(
    tmp_path: Path,
) -> None:
    """In a process of its own, since it switches prometheus-client to multiprocess mode: a
    parent shares a directory, forks two children that count and hold an upload in flight;
    the sum is served by either, and once a child is forgotten its gauge is gone but not its
    counts."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from moorage import metrics
        from tests.support.metrics import Scrape

        metrics.share_between_processes(Path(sys.argv[1]))
        children = []
        for count in (3, 4):
            reading, writing = os.pipe()
            pid = os.fork()
            if pid == 0:
                own = metrics.current()
                for _ in range(count):
                    own.request_series("manifest", "GET", 200).record(0.001, 0, 10)
                own.uploads_in_flight.inc()
                own.flush()
                os.write(writing, b"x")
                while True:
                    time.sleep(1)  # until killed
            os.read(reading, 1)
            children.append(pid)
        scrape = Scrape.parse(metrics.current().exposition().decode())
        print(scrape.value("moorage_http_requests_total", route="manifest", method="GET",
                           status="200"), scrape.value("moorage_uploads_in_flight"))
        os.kill(children[0], 9)
        os.waitpid(children[0], 0)
        metrics.forget_process(children[0])
        scrape = Scrape.parse(metrics.current().exposition().decode())
        print(scrape.value("moorage_http_requests_total", route="manifest", method="GET",
                           status="200"), scrape.value("moorage_uploads_in_flight"))
        os.kill(children[1], 9)
        os.waitpid(children[1], 0)
        """
    )
    directory = tmp_path / "metrics"
    directory.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["7.0 2.0", "7.0 1.0"]
