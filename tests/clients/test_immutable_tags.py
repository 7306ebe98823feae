"""Immutable tags as real clients meet them: skopeo and podman are refused with the registry's
message (the tag, the digest it holds and the rule), re-pushing the same image works, and
``skopeo delete`` of an immutable tag is refused.

The tag policy is registry-wide, so every test runs its own registry (``fresh_moorage``) rather
than changing the policy of the shared one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.clients import Clients, RegistryHttp
from tests.support.http import request
from tests.support.images import open_layout, random_image
from tests.support.server import RunningRegistry

pytestmark = pytest.mark.clients

RULE = "releases"
POLICY = {
    "default": "mutable",
    "rules": [
        {"name": RULE, "repositories": ["immutable-test/**"], "tags": ["v*"], "mode": "immutable"}
    ],
}


@pytest.fixture
def frozen(fresh_moorage: RunningRegistry) -> RunningRegistry:
    """A registry of the test's own, with ``v*`` tags immutable under immutable-test/."""
    reply = request(
        fresh_moorage.address,
        "PUT",
        "/v2/_moorage/policy/rules",
        json.dumps(POLICY).encode(),
        {"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.body
    check = request(
        fresh_moorage.address, "GET", "/v2/_moorage/policy/check?repository=immutable-test/a&tag=v1"
    )
    assert check.json()["reason"] == f"rule '{RULE}'"
    return fresh_moorage


@pytest.fixture
def http(frozen: RunningRegistry) -> RegistryHttp:
    return RegistryHttp(frozen.url)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return (
        f"immutable-test/{request.node.name.lower().replace('_', '-')[:40]}-{os.urandom(2).hex()}"
    )


def ref(registry: RunningRegistry, name: str, tag: str) -> str:
    return f"docker://{registry.address}/{name}:{tag}"


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode != 0, f"expected {' '.join(result.args)} to fail:\n{output}"
    for needle in needles:
        assert needle in output, f"{needle!r} not in the output of {result.args}:\n{output}"
    return output


def test_skopeo_copy_to_an_immutable_tag(
    clients: Clients, frozen: RunningRegistry, http: RegistryHttp, name: str, tmp_path: Path
) -> None:
    layout = open_layout(tmp_path / "src")
    one = layout.add(random_image(layer_sizes=(60_000,)), "one")
    two = layout.add(random_image(layer_sizes=(60_000,)), "two")
    digest_file = tmp_path / "pushed.digest"
    clients.skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--digestfile",
        digest_file,
        layout.ref("one"),
        ref(frozen, name, "v1.0"),
    )
    held = digest_file.read_text().strip()
    assert held == one.digest

    result = clients.skopeo(
        "copy", "--dest-tls-verify=false", layout.ref("two"), ref(frozen, name, "v1.0"), check=False
    )
    output = assert_refused(result, f"{name}:v1.0", held, f"rule '{RULE}'")
    assert "immutable" in output
    assert http.manifest(name, "v1.0").digest == held
    assert http.manifest_status(name, two.digest) == 404

    # The same image again is fine; so are a new immutable tag and a mutable one.
    clients.skopeo("copy", "--dest-tls-verify=false", layout.ref("one"), ref(frozen, name, "v1.0"))
    clients.skopeo("copy", "--dest-tls-verify=false", layout.ref("two"), ref(frozen, name, "v1.1"))
    for source in ("one", "two"):
        clients.skopeo(
            "copy", "--dest-tls-verify=false", layout.ref(source), ref(frozen, name, "latest")
        )
    assert http.manifest(name, "v1.0").digest == held
    assert http.manifest(name, "v1.1").digest == two.digest
    assert http.manifest(name, "latest").digest == two.digest


def test_podman_push_to_an_immutable_tag(
    clients: Clients, frozen: RunningRegistry, http: RegistryHttp, name: str, tmp_path: Path
) -> None:
    layout = open_layout(tmp_path / "src")
    layout.add(random_image(layer_sizes=(60_000,)), "one")
    layout.add(random_image(layer_sizes=(60_000,)), "two")
    first = clients.podman("pull", "--quiet", layout.ref("one")).stdout.strip()
    second = clients.podman("pull", "--quiet", layout.ref("two")).stdout.strip()
    target = ref(frozen, name, "v2.0")

    digest_file = tmp_path / "first.digest"
    clients.podman("push", "--tls-verify=false", "--digestfile", digest_file, first, target)
    held = digest_file.read_text().strip()
    assert http.manifest(name, "v2.0").digest == held

    result = clients.podman("push", "--tls-verify=false", second, target, check=False)
    assert_refused(result, f"{name}:v2.0", held, f"rule '{RULE}'")
    assert http.manifest(name, "v2.0").digest == held

    again = tmp_path / "again.digest"
    clients.podman("push", "--tls-verify=false", "--digestfile", again, first, target)
    assert again.read_text().strip() == held
    assert http.manifest(name, "v2.0").digest == held


def test_skopeo_delete_of_an_immutable_tag(
    clients: Clients, frozen: RunningRegistry, http: RegistryHttp, name: str, tmp_path: Path
) -> None:
    layout = open_layout(tmp_path / "src")
    one = layout.add(random_image(layer_sizes=(60_000,)), "one")
    layout.add(random_image(layer_sizes=(60_000,)), "two")
    clients.skopeo("copy", "--dest-tls-verify=false", layout.ref("one"), ref(frozen, name, "v3"))
    clients.skopeo(
        "copy", "--dest-tls-verify=false", layout.ref("two"), ref(frozen, name, "latest")
    )

    result = clients.skopeo("delete", "--tls-verify=false", ref(frozen, name, "v3"), check=False)
    assert_refused(result, f"{name}:v3", one.digest, f"rule '{RULE}'")
    stored = http.check_image(name, "v3")
    assert stored.digest == one.digest

    # A mutable tag (and its manifest) can still be deleted.
    clients.skopeo("delete", "--tls-verify=false", ref(frozen, name, "latest"))
    assert http.manifest_status(name, "latest") == 404
    assert http.manifest(name, "v3").digest == one.digest
