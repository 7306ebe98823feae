"""What only several replicas can get wrong: uploads whose requests land on different
replicas, a replica killed in the middle of a push, and immutable-tag races between replicas."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from pathlib import Path

from tests.support.clients import Clients, RegistryHttp, docker_ref
from tests.support.http import location_path, push_blob, race, request, with_query
from tests.support.images import (
    check_layout_image,
    config_blob,
    image_of,
    new_image,
    open_layout,
    sha256,
)
from tests.support.topology import Topology
from tests.support.waiting import wait_until

MIB = 1024 * 1024


def start_upload(address: str, repo: str) -> str:
    reply = request(address, "POST", f"/v2/{repo}/blobs/uploads/")
    assert reply.status == 202, reply.body
    return location_path(reply)


def patch(address: str, location: str, chunk: bytes, start: int) -> str:
    reply = request(
        address,
        "PATCH",
        location,
        chunk,
        {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(chunk) - 1}",
        },
    )
    assert reply.status == 202, (address, reply.status, reply.body)
    assert reply.header("Range") == f"0-{start + len(chunk) - 1}"
    return location_path(reply)


def check_blob_everywhere(topology: Topology, repo: str, digest: str, data: bytes) -> None:
    for address in [r.address for r in topology.replicas] + [topology.front.address]:
        reply = request(address, "GET", f"/v2/{repo}/blobs/{digest}")
        assert reply.status == 200, (address, reply.status)
        assert reply.body == data, address


def test_chunked_upload_with_each_patch_on_another_replica(topology: Topology, repo: str) -> None:
    replicas = [replica.address for replica in topology.replicas]
    data = os.urandom(7 * MIB + 12345)
    chunks = [data[i : i + MIB + 7] for i in range(0, len(data), MIB + 7)]
    location = start_upload(replicas[0], repo)
    offset = 0
    for index, chunk in enumerate(chunks):
        location = patch(replicas[(index + 1) % len(replicas)], location, chunk, offset)
        offset += len(chunk)
    # Any replica reports the same progress.
    for address in replicas:
        status = request(address, "GET", location)
        assert status.status == 204
        assert status.header("Range") == f"0-{len(data) - 1}"
    digest = sha256(data)
    reply = request(replicas[1], "PUT", with_query(location, digest=digest))
    assert reply.status == 201, reply.body
    check_blob_everywhere(topology, repo, digest, data)


def test_chunked_upload_through_the_front_door_on_one_connection(
    topology: Topology, repo: str
) -> None:
    """One keep-alive connection to HAProxy: its requests go round-robin over the replicas."""
    data = os.urandom(5 * MIB + 3)
    host, port = topology.front.host, topology.front.port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", f"/v2/{repo}/blobs/uploads/")
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 202
        location = reply.headers["Location"]
        for start in range(0, len(data), 512 * 1024):
            chunk = data[start : start + 512 * 1024]
            conn.request(
                "PATCH",
                location,
                chunk,
                {"Content-Range": f"{start}-{start + len(chunk) - 1}"},
            )
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 202, reply.status
            location = reply.headers["Location"]
        digest = sha256(data)
        conn.request("PUT", with_query(location, digest=digest))
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 201
    finally:
        conn.close()
    check_blob_everywhere(topology, repo, digest, data)


def _stream_until_killed(
    address: str, location: str, data: bytes, kill: threading.Event, killed: threading.Event
) -> None:
    """PATCH ``data``, setting ``kill`` half way and going on once ``killed`` is set: the
    connection then breaks."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: {address}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode())
        piece = 256 * 1024
        for start in range(0, len(data), piece):
            if start >= len(data) // 2 and not kill.is_set():
                kill.set()
                assert killed.wait(30), "the replica was not killed"
            sock.sendall(data[start : start + piece])
    except OSError:
        return  # the replica died under us, as intended
    finally:
        sock.close()


def test_replica_killed_mid_upload_leaves_nothing_visible_and_a_retry_succeeds(
    topology: Topology, repo: str
) -> None:
    victim = 1
    address = topology.replicas[victim].address
    data = os.urandom(24 * MIB)
    digest = sha256(data)
    location = start_upload(topology.front.address, repo)
    kill, killed = threading.Event(), threading.Event()
    writer = threading.Thread(
        target=_stream_until_killed, args=(address, location, data, kill, killed)
    )
    writer.start()
    try:
        assert kill.wait(30)
        topology.kill_replica(victim)
        killed.set()
        writer.join(30)
        survivors = [r.address for i, r in enumerate(topology.replicas) if i != victim]
        for survivor in survivors:
            # Nothing of the torn upload is visible as a blob.
            assert request(survivor, "HEAD", f"/v2/{repo}/blobs/{digest}").status == 404
            # The session is intact: its recorded progress is what was committed (nothing:
            # the killed request never finished, nor reached its first checkpoint).
            status = request(survivor, "GET", location)
            assert status.status == 204, status.body
            assert status.header("Range") == "0--1"
            assert status.header("Upload-Offset") == "0"
        wrong = request(survivors[0], "PUT", with_query(location, digest=digest))
        assert wrong.status >= 400
        # The client's retry: a new upload through the front door, which routes around the
        # dead replica.
        retry = start_upload(topology.front.address, repo)
        reply = request(topology.front.address, "PUT", with_query(retry, digest=digest), data)
        assert reply.status == 201, reply.body
        for survivor in survivors:
            got = request(survivor, "GET", f"/v2/{repo}/blobs/{digest}")
            assert got.status == 200 and got.body == data
    finally:
        topology.restart_replica(victim)
    check_blob_everywhere(topology, repo, digest, data)


def test_skopeo_push_with_a_replica_killed_mid_push(
    topology: Topology, clients: Clients, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """The push that loses a replica may fail (HAProxy answers 502 for the requests that were
    on it); nothing it left is half-visible, and running it again succeeds."""
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(20 * MIB, 15 * MIB, 9 * MIB))
    victim = 2
    copy = (
        "copy",
        "--retry-times",
        "3",
        "--dest-tls-verify=false",
        layout.ref("v1"),
        docker_ref(topology.registry, repo, "v1"),
    )
    push = clients.popen(clients.skopeo_command(*copy))

    def pushing() -> bool:
        """The push has stored a first layer (and goes on with the others), or it ended."""
        stored = any(http.blob_status(repo, digest) == 200 for digest in image.layer_digests)
        return stored or push.poll() is not None

    try:
        wait_until(pushing, "the push to store its first layer", timeout=60)
        topology.kill_replica(victim)
        out, err = push.communicate(timeout=180)
    finally:
        if push.poll() is None:
            push.kill()
            push.wait()
    # Whatever the interrupted push left behind is whole: a blob is either absent or exact,
    # and the tag either absent or pointing at the complete image.
    for digest in image.blob_digests:
        if http.blob_status(repo, digest) == 200:
            assert http.blob(repo, digest) == layout.read_blob(digest), digest
    if push.returncode == 0:
        assert http.check_image(repo, "v1").digest == image.digest
    else:
        assert "502" in err or "EOF" in err or "connection" in err, out + err
        assert http.manifest_status(repo, "v1") == 404
        clients.skopeo(*copy)  # the retry, with one replica still down
    topology.restart_replica(victim)
    stored = http.check_image(repo, "v1")
    assert stored.digest == image.digest
    for replica in topology.replicas:
        out_layout = open_layout(tmp_path / f"out-{replica.port}")
        clients.skopeo(
            "copy",
            "--src-tls-verify=false",
            docker_ref(replica, repo, "v1"),
            out_layout.ref("copy"),
        )
        check_layout_image(out_layout, image.digest)
        for digest in image.blob_digests:
            assert out_layout.read_blob(digest) == layout.read_blob(digest), digest


def test_one_push_wins_a_new_immutable_tag_across_replicas(topology: Topology) -> None:
    front = topology.front.address
    repository = f"scaleout-race/app-{os.urandom(3).hex()}"
    policy = request(front, "GET", "/v2/_moorage/policy/rules").json()
    rules = [
        *policy["rules"],
        {"repositories": ["scaleout-race/**"], "tags": ["*"], "mode": "immutable"},
    ]
    document = {"default": policy["default"], "rules": rules}
    reply = request(front, "PUT", "/v2/_moorage/policy/rules", json.dumps(document).encode())
    assert reply.status == 200, reply.body
    addresses = [replica.address for replica in topology.replicas]
    config = config_blob("race")
    push_blob(front, repository, config.data)
    images = [image_of(config, annotations={"racer": str(index)}) for index in range(9)]
    statuses = race(addresses, "release-1", images, repository)
    winners = [index for index, status, _ in statuses if status == 201]
    assert len(winners) == 1, statuses
    assert sorted(status for _, status, _ in statuses) == [201] + [403] * 8
    history = request(
        addresses[2], "GET", f"/v2/{repository}/_moorage/tags/history?tag=release-1"
    ).json()["events"]
    assert sorted(e["action"] for e in history) == ["created"] + ["refused"] * 8
