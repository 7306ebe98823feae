"""Real clients racing each other on one repository and tag (the 2-worker session registry)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.clients import Clients, RegistryHttp
from tests.support.images import (
    Image,
    check_layout_image,
    layout_blob_digests,
    new_image,
    open_layout,
)
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients

#: Pulls per pulling process in the re-push race.
ROUNDS = 12


def finish(process: subprocess.Popen[str], timeout: float = 180) -> None:
    """Wait for a client started with ``Clients.popen``; fail with its output if it failed."""
    stdout, stderr = process.communicate(timeout=timeout)
    if process.returncode != 0:
        command = process.args if isinstance(process.args, list) else [process.args]
        raise AssertionError(
            f"exit status {process.returncode}: {' '.join(map(str, command))}\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


def test_concurrent_pushes_of_one_image_to_one_tag(
    clients: Clients,
    make_clients: Callable[[str], Clients],
    registry: RunningRegistry,
    http: RegistryHttp,
    repo: str,
    tmp_path: Path,
) -> None:
    """3 skopeo + 1 podman push the same (new) image to one tag at once: all succeed, the
    skopeo pushes store the layout's exact manifest, the tag names one complete image, and
    it pulls back as the same image.

    podman pushes from its storage, where layers are uncompressed: when it cannot reuse the
    compressed blobs at the registry (the race decides) it compresses them again, with other
    digests, so its manifest digest may differ; the image (config digest) is the same.
    skopeo runs with --preserve-digests: otherwise containers/image may substitute a layer
    with podman's recompressed copy it learnt about (blob info cache) and rewrite the manifest.
    """
    layout, image = new_image(
        tmp_path / "src", "v1", layer_sizes=(1_500_000, 1_000_000, 300_000), compact=True
    )
    image_id = clients.podman("pull", "--quiet", layout.ref("v1")).stdout.strip()
    assert f"sha256:{image_id}" == image.config_digest
    target = f"{registry.address}/{repo}:shared"

    digest_files = [tmp_path / f"skopeo-{n}.digest" for n in range(3)]
    podman_digest = tmp_path / "podman.digest"
    processes = [
        clients.popen(
            clients.skopeo_command(
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--digestfile",
                digest_file,
                layout.ref("v1"),
                f"docker://{target}",
            )
        )
        for digest_file in digest_files
    ]
    processes.append(
        clients.popen(
            clients.podman_command(
                "push",
                "--tls-verify=false",
                "--digestfile",
                podman_digest,
                image_id,
                f"docker://{target}",
            )
        )
    )
    for process in processes:
        finish(process)

    skopeo_digests = {path.read_text().strip() for path in digest_files}
    assert skopeo_digests == {image.digest}
    pushed_by_podman = podman_digest.read_text().strip()

    # The tag names exactly one of the pushed manifests, complete and intact.
    assert http.tags(repo) == ["shared"]
    tagged = http.check_image(repo, "shared")
    assert tagged.digest in {image.digest, pushed_by_podman}
    assert tagged.json["config"]["digest"] == image.config_digest
    # Both pushes left complete images behind (by digest).
    assert http.check_image(repo, image.digest).payload == image.manifest
    assert http.check_image(repo, pushed_by_podman).json["config"]["digest"] == image.config_digest
    for digest in image.blob_digests:
        assert http.blob(repo, digest) == layout.read_blob(digest)

    out = open_layout(tmp_path / "out")
    clients.skopeo("copy", "--src-tls-verify=false", f"docker://{target}", out.ref("pulled"))
    assert out.tagged("pulled")["digest"] == tagged.digest
    assert check_layout_image(out, tagged.digest)["config"]["digest"] == image.config_digest

    fresh = make_clients("fresh")
    pulled = fresh.podman("pull", "--tls-verify=false", "--quiet", target).stdout.strip()
    assert pulled == image_id


def test_pulls_while_the_tag_is_repushed(
    clients: Clients, registry: RunningRegistry, http: RegistryHttp, repo: str, tmp_path: Path
) -> None:
    """Two processes pull a tag over and over while a third re-pushes it, alternating two
    images: every pull yields one complete, valid image that is one of the two."""
    first_layout, first = new_image(tmp_path / "a", "a", layer_sizes=(1_000_000, 200_000))
    second_layout, second = new_image(tmp_path / "b", "b", layer_sizes=(600_000, 600_000))
    images: dict[str, Image] = {first.digest: first, second.digest: second}
    target = f"docker://{registry.address}/{repo}:moving"
    sources = [first_layout.ref("a"), second_layout.ref("b")]
    for source in sources:
        clients.skopeo("copy", "--dest-tls-verify=false", source, target)
    assert http.manifest(repo, "moving").digest == second.digest

    stop = threading.Event()
    pushes = 0

    def pusher() -> None:
        nonlocal pushes
        try:
            while not stop.is_set():
                clients.skopeo("copy", "--dest-tls-verify=false", sources[pushes % 2], target)
                pushes += 1
        finally:
            stop.set()

    def puller(number: int, rounds: int) -> list[str]:
        seen: list[str] = []
        for round_ in range(rounds):
            out = open_layout(tmp_path / f"pull-{number}-{round_}")
            clients.skopeo("copy", "--src-tls-verify=false", target, out.ref("x"))
            digest = out.tagged("x")["digest"]
            assert digest in images, f"pull {number}/{round_} got unknown manifest {digest}"
            image = images[digest]
            manifest = check_layout_image(out, digest)
            assert out.read_blob(digest) == image.manifest
            assert manifest["config"]["digest"] == image.config_digest
            assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests
            assert layout_blob_digests(out) == {digest, *image.blob_digests}
            seen.append(digest)
        return seen

    with ThreadPoolExecutor(max_workers=3) as pool:
        pushing = pool.submit(pusher)
        pulls = [pool.submit(puller, number, ROUNDS) for number in range(2)]
        try:
            seen = [digest for future in pulls for digest in future.result(timeout=300)]
        finally:
            stop.set()
        pushing.result(timeout=300)

    assert pushes >= 2, "the tag was not re-pushed while the pulls ran"
    assert len(seen) == 2 * ROUNDS
    assert set(seen) <= set(images)
    # After the dust settles the tag still names a complete image.
    assert http.check_image(repo, "moving").digest in images
