"""Racing pushes of different digests to one new immutable tag, across worker processes and
registry processes sharing a data directory: exactly one wins, the rest are refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tests.support.http import push_blob, request, sha256
from tests.support.server import start_moorage

ALL_IMMUTABLE = {"default": "immutable", "rules": []}
RACERS = 12


def manifest(config: str, size: int, index: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": size,
            },
            "layers": [],
            "annotations": {"racer": str(index)},
        }
    ).encode()


def race(
    addresses: list[str], tag: str, payloads: list[bytes], repository: str = "race/app"
) -> list[tuple[int, int, bytes]]:
    """Every payload pushed to ``tag`` at once, alternating between the registries."""
    barrier = threading.Barrier(len(payloads))
    statuses: list[tuple[int, int, bytes]] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        barrier.wait()
        reply = request(
            addresses[index % len(addresses)],
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            payloads[index],
            {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        with lock:
            statuses.append((index, reply.status, reply.body))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_exactly_one_push_wins_a_new_immutable_tag(tmp_path: Path) -> None:
    first = start_moorage(tmp_path / "a", workers=2)
    second = start_moorage(tmp_path / "b", workers=2, data=first.data)
    try:
        addresses = [first.address, second.address]
        reply = request(
            first.address, "PUT", "/v2/_moorage/policy/rules", json.dumps(ALL_IMMUTABLE).encode()
        )
        assert reply.status == 200, reply.body
        config_bytes = b'{"architecture": "amd64", "os": "linux"}'
        config = push_blob(first.address, "race/app", config_bytes)
        payloads = [manifest(config, len(config_bytes), i) for i in range(RACERS)]
        for round_ in range(5):
            tag = f"release-{round_}"
            statuses = race(addresses, tag, payloads)
            winners = [index for index, status, _ in statuses if status == 201]
            assert len(winners) == 1, statuses
            losers = [(s, b) for i, s, b in statuses if i != winners[0]]
            assert all(
                s == 403 and json.loads(b)["errors"][0]["code"] == "DENIED" for s, b in losers
            )
            winner_digest = sha256(payloads[winners[0]])
            for address in addresses:
                reply = request(
                    address,
                    "HEAD",
                    f"/v2/race/app/manifests/{tag}",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                )
                assert reply.header("Docker-Content-Digest") == winner_digest
            history = request(
                second.address, "GET", f"/v2/race/app/_moorage/tags/history?tag={tag}"
            ).json()["events"]
            actions = sorted(e["action"] for e in history)
            assert actions == ["created"] + ["refused"] * (RACERS - 1)
            assert all(
                e["old_digest"] == winner_digest for e in history if e["action"] == "refused"
            )
    finally:
        second.stop()
        first.stop()
