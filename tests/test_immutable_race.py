"""Racing pushes of different digests to one new immutable tag, across worker processes and
registry processes sharing a data directory: exactly one wins, the rest are refused."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.http import push_blob, race, request
from tests.support.images import Blob, Image, config_blob, image_of
from tests.support.server import start_moorage

ALL_IMMUTABLE = {"default": "immutable", "rules": []}
RACERS = 12


def racers(config: Blob, count: int) -> list[Image]:
    """``count`` images of one config, told apart by an annotation."""
    return [image_of(config, annotations={"racer": str(index)}) for index in range(count)]


def test_exactly_one_push_wins_a_new_immutable_tag(tmp_path: Path) -> None:
    first = start_moorage(tmp_path / "a", workers=2)
    second = start_moorage(tmp_path / "b", workers=2, data=first.data)
    try:
        addresses = [first.address, second.address]
        reply = request(
            first.address, "PUT", "/v2/_moorage/policy/rules", json.dumps(ALL_IMMUTABLE).encode()
        )
        assert reply.status == 200, reply.body
        config = config_blob("race")
        push_blob(first.address, "race/app", config.data)
        images = racers(config, RACERS)
        for round_ in range(5):
            tag = f"release-{round_}"
            statuses = race(addresses, tag, images, "race/app")
            winners = [index for index, status, _ in statuses if status == 201]
            assert len(winners) == 1, statuses
            losers = [(s, b) for i, s, b in statuses if i != winners[0]]
            assert all(
                s == 403 and json.loads(b)["errors"][0]["code"] == "DENIED" for s, b in losers
            )
            winner_digest = images[winners[0]].digest
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
