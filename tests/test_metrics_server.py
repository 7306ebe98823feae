"""/metrics, /livez and /readyz of real ``moorage serve`` processes with 2 workers.

Each request goes on a new connection, so the kernel spreads them over both workers, and so
does each scrape: whichever worker answers, it must report the sum of both (the workers keep
their metrics in files of one directory the parent made). The webhooks' listener serves the
same. A worker that dies keeps its counts in the sums and drops its uploads in flight; the
directory goes when the server stops. ``promtool check metrics`` accepts what is served.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admission.reviews import pod_spec, review, workload
from tests.support.cli import moorage_cli
from tests.support.http import location_path, push_blob, push_image, request
from tests.support.images import random_image
from tests.support.metrics import Scrape
from tests.support.programs import program
from tests.support.server import RunningRegistry, free_port, start_moorage
from tests.support.waiting import wait_until
from tests.test_server import worker_pids

REQUESTS = "moorage_http_requests_total"
GET_200 = {"route": "manifest", "method": "GET", "status": "200"}


def scrape(address: str, tls: ssl.SSLContext | None = None) -> Scrape:
    reply = request(address, "GET", "/metrics", tls=tls)
    assert reply.status == 200, reply.body
    assert reply.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape.parse(reply.body.decode())


def metrics_directories(registry: RunningRegistry) -> list[Path]:
    """The metrics directories of the server (its TMPDIR is the test's)."""
    return sorted((registry.log.parent / "tmp").glob("moorage-metrics-*"))


def wait_for(
    address: str,
    name: str,
    value: float,
    labels: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Until a scrape shows ``value`` (each worker writes its counts once a second)."""
    wanted = labels or {}
    wait_until(
        lambda: scrape(address, tls).value(name, **wanted) == value,
        lambda: (
            f"{name}{wanted} to reach {value} (now {scrape(address, tls).value(name, **wanted)})"
        ),
        timeout=15,
    )


def test_any_worker_serves_the_sum_of_both(fresh_moorage: RunningRegistry) -> None:
    address = fresh_moorage.address
    push_image(address, "team/app", random_image(layer_sizes=(512,)), "v1")
    count = 40
    for _ in range(count):
        assert request(address, "GET", "/v2/team/app/manifests/v1").status == 200
    wait_for(address, REQUESTS, count, GET_200)
    for _ in range(10):  # new connections: both workers answer some of these
        assert scrape(address).value(REQUESTS, **GET_200) == count
    # Both workers served requests: each wrote the counters of its own process.
    (directory,) = metrics_directories(fresh_moorage)
    writers = {int(path.stem.split("_")[-1]) for path in directory.glob("counter_*.db")}
    assert worker_pids(fresh_moorage) <= writers


def test_a_dead_worker_keeps_its_counts_and_drops_its_uploads_in_flight(
    fresh_moorage: RunningRegistry,
) -> None:
    address = fresh_moorage.address
    count = 20
    for _ in range(count):
        assert request(address, "GET", "/v2/_catalog").status == 200
    catalog = {"route": "catalog", "method": "GET", "status": "200"}
    wait_for(address, REQUESTS, count, catalog)
    reply = request(address, "POST", "/v2/team/slow/blobs/uploads/")
    assert reply.status == 202
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"PATCH {location_path(reply)} HTTP/1.1\r\nHost: {address}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n".encode()
            + b"x" * 1000
        )
        wait_for(address, "moorage_uploads_in_flight", 1)
        before = worker_pids(fresh_moorage)
        for pid in before:  # the one receiving the upload among them
            subprocess.run(["kill", "-KILL", str(pid)], check=True)

        def replaced() -> bool:
            now = worker_pids(fresh_moorage)
            return len(now) == 2 and not now & before

        wait_until(replaced, "both workers to be replaced", timeout=20)
        wait_for(address, "moorage_uploads_in_flight", 0)
    assert scrape(address).value(REQUESTS, **catalog) == count


def test_the_directory_goes_when_the_server_stops(fresh_moorage: RunningRegistry) -> None:
    (directory,) = metrics_directories(fresh_moorage)
    assert directory.is_dir()
    fresh_moorage.stop()
    assert fresh_moorage.process.returncode == 0
    assert not directory.exists()


def test_disabled_metrics(tmp_path: Path) -> None:
    registry = start_moorage(tmp_path / "r", env={"MOORAGE_METRICS_ENABLED": "false"})
    try:
        assert request(registry.address, "GET", "/metrics").status == 404
        assert request(registry.address, "GET", "/livez").status == 200
        assert request(registry.address, "GET", "/readyz").status == 200
        assert metrics_directories(registry) == []
    finally:
        registry.stop()


# -- with the webhooks: both listeners ---------------------------------------------------------


@pytest.fixture
def with_webhooks(tmp_path: Path) -> Iterator[tuple[RunningRegistry, str, ssl.SSLContext]]:
    """``moorage serve --webhook-listen`` (2 workers, HTTPS); the registry, the webhooks'
    address, and a context that trusts both."""
    issued = tmp_path / "certs"
    moorage_cli("certs", "--out", str(issued), "--ip", "127.0.0.1")
    hooks = f"127.0.0.1:{free_port()}"
    tls = (issued / "tls.crt", issued / "tls.key", issued / "ca.crt")
    registry = start_moorage(tmp_path / "registry", args=("--webhook-listen", hooks), tls=tls)
    context = ssl.create_default_context(cafile=str(tls[2]))
    try:
        yield registry, hooks, context
    finally:
        registry.stop()


def admit(hooks: str, body: bytes, tls: ssl.SSLContext) -> dict[str, object]:
    reply = request(hooks, "POST", "/mutate", body, {"Content-Type": "application/json"}, tls=tls)
    assert reply.status == 200, reply.body
    answer: dict[str, object] = reply.json()["response"]
    return answer


def test_probes_and_metrics_on_both_listeners(
    with_webhooks: tuple[RunningRegistry, str, ssl.SSLContext],
) -> None:
    registry, hooks, tls = with_webhooks
    for address in (registry.address, hooks):
        assert request(address, "GET", "/livez", tls=tls).body == b"ok"
        ready = request(address, "GET", "/readyz", tls=tls)
        assert ready.status == 200, ready.body
        assert ready.json()["status"] == "ready"
    assert request(registry.address, "GET", "/readyz", tls=tls).json()["checks"] == {
        "metadata": "ok",
        "storage": "ok",
    }
    assert request(hooks, "GET", "/readyz", tls=tls).json()["checks"] == {"metadata": "ok"}
    assert request(hooks, "GET", "/healthz", tls=tls).body == b"ok"

    image = f"{registry.address}/team/app:v1"
    push_image(registry.address, "team/app", random_image(layer_sizes=(512,)), "v1", tls=tls)
    count = 12
    for index in range(count):
        answer = admit(hooks, review(workload("Pod", pod_spec([image]), name=f"p{index}")), tls)
        assert answer["allowed"] is True and "patch" in answer
    missing = f"{registry.address}/team/none:v1"
    assert admit(hooks, review(workload("Pod", pod_spec([missing]))), tls)["allowed"] is False
    patched = {"webhook": "mutate", "outcome": "patched"}
    wait_for(hooks, "moorage_admission_reviews_total", count, patched, tls)
    # Each review read its tag from the metadata store: the first read of each worker that
    # had any, at least, was timed.
    timed = "moorage_metadata_operation_duration_seconds_count"
    wait_until(
        lambda: scrape(hooks, tls).value(timed, operation="resolve_tag") >= 1,
        "a timed read of a tag",
        timeout=15,
    )
    for address in (hooks, registry.address):  # one directory: the same sums on both
        for _ in range(4):
            scraped = scrape(address, tls)
            assert scraped.value("moorage_admission_reviews_total", **patched) == count
            assert scraped.value("moorage_admission_reviews_total", webhook="mutate",
                                 outcome="denied") == 1  # fmt: skip
            assert scraped.value("moorage_admission_review_duration_seconds_count",
                                 webhook="mutate") == count + 1  # fmt: skip
            assert 1 <= scraped.value(timed, operation="resolve_tag") <= count + 1


def test_promtool_accepts_the_metrics(
    with_webhooks: tuple[RunningRegistry, str, ssl.SSLContext],
) -> None:
    """After requests that move every kind of metric the registry has a use for here."""
    registry, hooks, tls = with_webhooks
    address = registry.address
    policy = {"default": "immutable", "rules": [{"name": "dev", "repositories": ["dev/**"],
                                                 "mode": "mutable"}]}  # fmt: skip
    reply = request(address, "PUT", "/v2/_moorage/policy/rules", json.dumps(policy).encode(),
                    {"Content-Type": "application/json"}, tls=tls)  # fmt: skip
    assert reply.status == 200, reply.body
    first, second = random_image(layer_sizes=(512,)), random_image(layer_sizes=(512,))
    push_image(address, "prod/app", first, "v1", tls=tls)
    push_image(address, "dev/app", first, "v1", tls=tls)
    push_image(address, "dev/app", second, "v1", tls=tls)  # mutable: moves
    for blob in second.blobs:
        push_blob(address, "prod/app", blob.data, tls=tls)
    refused = request(address, "PUT", "/v2/prod/app/manifests/v1", second.manifest,
                      {"Content-Type": second.media_type}, tls=tls)  # fmt: skip
    assert refused.status == 403
    for blob in first.blobs:
        assert request(address, "GET", f"/v2/prod/app/blobs/{blob.digest}", tls=tls).status == 200
    admit(hooks, review(workload("Pod", pod_spec([f"{address}/prod/app:v1"]))), tls)
    assert scrape(address, tls).value("moorage_tag_refusals_total", rule="(default)") == 1
    blob_gets = {"route": "blob", "method": "GET", "status": "200"}
    wait_for(address, REQUESTS, len(first.blobs), blob_gets, tls)
    promtool = program("promtool")
    for served in (address, hooks):
        text = request(served, "GET", "/metrics", tls=tls).body
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, check=False
        )
        assert checked.returncode == 0 and not checked.stdout and not checked.stderr, (
            checked.stdout + checked.stderr
        ).decode()
        scraped = Scrape.parse(text.decode())
        assert scraped.types["moorage_http_request_duration_seconds"] == "histogram"
        assert scraped.types["moorage_uploads_in_flight"] == "gauge"
        assert scraped.total("moorage_http_received_bytes_total", route="upload") > 0
