"""moorage over HTTPS (a throwaway CA) with basic auth (bcrypt htpasswd), driven by skopeo,
podman, oras and helm; anonymous pull only with --anonymous-pull.

Two registries of this module's own: ``secure`` (--htpasswd) and ``open_pull``
(--htpasswd --anonymous-pull), both with the same certificate and users.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import oras.client
import pytest

from tests.support.clients import (
    Clients,
    Containerd,
    Pki,
    RegistryHttp,
    expect_failure,
    make_pki,
    write_htpasswd,
)
from tests.support.images import check_layout_image, new_image, open_layout, write_oci_archive
from tests.support.server import RunningRegistry, start_moorage

pytestmark = pytest.mark.clients

USER = "alice"
PASSWORD = f"pw-{os.urandom(6).hex()}"
AUTH_ERRORS = (
    "unauthorized",
    "authentication required",
    "invalid username or password",
    "invalid username/password",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_htpasswd(
        tmp_path_factory.mktemp("auth") / "htpasswd", {USER: PASSWORD, "bob": "other"}
    )


def _start(workdir: Path, pki: Pki, args: tuple[str, ...]) -> RunningRegistry:
    return start_moorage(workdir, args=args, tls=(pki.server_cert, pki.server_key, pki.ca_cert))


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, htpasswd: Path
) -> Iterator[RunningRegistry]:
    registry = _start(tmp_path_factory.mktemp("secure"), pki, ("--htpasswd", str(htpasswd)))
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def open_pull(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, htpasswd: Path
) -> Iterator[RunningRegistry]:
    registry = _start(
        tmp_path_factory.mktemp("open-pull"), pki, ("--htpasswd", str(htpasswd), "--anonymous-pull")
    )
    yield registry
    registry.stop()


def admin(registry: RunningRegistry, pki: Pki) -> RegistryHttp:
    return RegistryHttp(registry.url, ca_file=pki.ca_cert, auth=(USER, PASSWORD))


def test_https_requires_credentials(secure: RunningRegistry, pki: Pki) -> None:
    anonymous = RegistryHttp(secure.url, ca_file=pki.ca_cert)
    response = anonymous.request("GET", "/v2/")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].lower().startswith("basic ")
    assert (
        RegistryHttp(secure.url, ca_file=pki.ca_cert, auth=(USER, "nope"))
        .request("GET", "/v2/")
        .status
        == 401
    )
    assert admin(secure, pki).request("GET", "/v2/").status == 200


def test_skopeo_push_pull_with_cert_dir_and_creds(
    clients: Clients, secure: RunningRegistry, pki: Pki, repo: str, tmp_path: Path
) -> None:
    layout, image = new_image(tmp_path / "src", "v1")
    target = f"docker://{secure.address}/{repo}:v1"
    creds = f"{USER}:{PASSWORD}"
    clients.skopeo(
        "copy", "--dest-cert-dir", pki.cert_dir, "--dest-creds", creds, layout.ref("v1"), target
    )
    inspected = clients.skopeo_inspect(target, "--cert-dir", str(pki.cert_dir), "--creds", creds)
    assert inspected["Digest"] == image.digest
    assert admin(secure, pki).check_image(repo, "v1").payload == image.manifest

    out = open_layout(tmp_path / "out")
    clients.skopeo(
        "copy", "--src-cert-dir", pki.cert_dir, "--src-creds", creds, target, out.ref("v1")
    )
    check_layout_image(out, image.digest)
    for digest in image.blob_digests:
        assert out.read_blob(digest) == layout.read_blob(digest)


def test_skopeo_checks_the_certificate(
    clients: Clients, secure: RunningRegistry, repo: str, tmp_path: Path
) -> None:
    """Without the CA the TLS handshake fails: the registry is not reached over plain trust."""
    layout, _ = new_image(tmp_path / "src", "v1", layer_sizes=(10_000,))
    result = clients.skopeo(
        "copy",
        "--dest-creds",
        f"{USER}:{PASSWORD}",
        layout.ref("v1"),
        f"docker://{secure.address}/{repo}:v1",
        check=False,
    )
    expect_failure(result, "certificate signed by unknown authority", "x509")


def test_podman_login_push_pull(
    clients: Clients,
    make_clients: Callable[[str], Clients],
    secure: RunningRegistry,
    pki: Pki,
    repo: str,
    tmp_path: Path,
) -> None:
    """podman push with --creds; podman login stores credentials in REGISTRY_AUTH_FILE, and a
    pull into empty storage uses them."""
    layout, image = new_image(tmp_path / "src", "v1")
    image_id = clients.podman("pull", "--quiet", layout.ref("v1")).stdout.strip()
    target = f"{secure.address}/{repo}:v1"
    digest_file = tmp_path / "pushed.digest"
    clients.podman(
        "push",
        "--cert-dir",
        pki.cert_dir,
        "--creds",
        f"{USER}:{PASSWORD}",
        "--digestfile",
        digest_file,
        image_id,
        f"docker://{target}",
    )
    pushed = digest_file.read_text().strip()
    stored = admin(secure, pki).check_image(repo, "v1")
    assert stored.digest == pushed
    assert stored.json["config"]["digest"] == image.config_digest

    fresh = make_clients("fresh")
    fresh.run(
        fresh.podman_command(
            "login",
            "--cert-dir",
            pki.cert_dir,
            "--username",
            USER,
            "--password-stdin",
            secure.address,
        ),
        input=PASSWORD,
    )
    auths = json.loads(fresh.auth_file.read_text())["auths"]
    assert secure.address in auths
    pulled = fresh.podman("pull", "--cert-dir", pki.cert_dir, "--quiet", target).stdout.strip()
    assert f"sha256:{pulled}" == image.config_digest
    digest = fresh.podman("image", "inspect", "--format", "{{.Digest}}", target).stdout.strip()
    assert digest == pushed


def test_wrong_credentials_are_refused(
    clients: Clients, secure: RunningRegistry, pki: Pki, repo: str, tmp_path: Path
) -> None:
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(20_000,))
    target = f"docker://{secure.address}/{repo}:v1"
    for creds in (f"{USER}:wrong-{PASSWORD}", f"mallory:{PASSWORD}", f"bob:{PASSWORD}"):
        result = clients.skopeo(
            "copy",
            "--dest-cert-dir",
            pki.cert_dir,
            "--dest-creds",
            creds,
            layout.ref("v1"),
            target,
            check=False,
        )
        expect_failure(result, *AUTH_ERRORS)
    # No credentials at all.
    result = clients.skopeo(
        "copy", "--dest-cert-dir", pki.cert_dir, layout.ref("v1"), target, check=False
    )
    expect_failure(result, *AUTH_ERRORS)

    image_id = clients.podman("pull", "--quiet", layout.ref("v1")).stdout.strip()
    result = clients.podman(
        "push",
        "--cert-dir",
        pki.cert_dir,
        "--creds",
        f"{USER}:wrong",
        image_id,
        target,
        check=False,
    )
    expect_failure(result, *AUTH_ERRORS)
    result = clients.run(
        clients.podman_command(
            "login", "--cert-dir", pki.cert_dir, "-u", USER, "--password-stdin", secure.address
        ),
        input="wrong",
        check=False,
    )
    expect_failure(result, *AUTH_ERRORS)
    assert secure.address not in json.loads(clients.auth_file.read_text())["auths"]

    # Nothing was stored: neither the manifest nor any blob.
    checker = admin(secure, pki)
    assert checker.manifest_status(repo, "v1") == 404
    for digest in image.blob_digests:
        assert checker.blob_status(repo, digest) == 404


def test_containerd_push_and_pull_over_tls_with_user(
    ctrd: Containerd, secure: RunningRegistry, pki: Pki, repo: str, tmp_path: Path
) -> None:
    """ctr with hosts.toml (CA) and --user: push an imported OCI archive, pull it back."""
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(100_000,))
    reference = f"{secure.address}/{repo}:v1"
    hosts = ctrd.trust(secure.address, pki.ca_cert)
    archive = write_oci_archive(layout, tmp_path / "image.tar")
    ctrd.ctr("images", "import", "--base-name", f"{secure.address}/{repo}", archive)
    assert ctrd.image_target(reference)["digest"] == image.digest
    result = ctrd.ctr("images", "push", "--hosts-dir", hosts, reference, check=False)
    expect_failure(result, *AUTH_ERRORS)
    ctrd.ctr("images", "push", "--hosts-dir", hosts, "--user", f"{USER}:{PASSWORD}", reference)
    assert admin(secure, pki).check_image(repo, "v1").payload == image.manifest

    ctrd.ctr(
        "--namespace", "pulled", "images", "pull", "--hosts-dir", hosts,
        "--user", f"{USER}:{PASSWORD}", reference,
    )  # fmt: skip
    pulled = ctrd.ctr("--namespace", "pulled", "content", "ls", "--quiet").stdout.split()
    assert {image.digest, *image.blob_digests} <= set(pulled)


def test_anonymous_pull_only_when_enabled(
    clients: Clients,
    ctrd: Containerd,
    secure: RunningRegistry,
    open_pull: RunningRegistry,
    pki: Pki,
    repo: str,
    tmp_path: Path,
) -> None:
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(100_000,))
    creds = f"{USER}:{PASSWORD}"
    clients.skopeo(
        "copy",
        "--dest-cert-dir",
        pki.cert_dir,
        "--dest-creds",
        creds,
        layout.ref("v1"),
        f"docker://{secure.address}/{repo}:v1",
    )
    # containerd pushes here too (containers/image clients: see the test below).
    hosts = ctrd.trust(open_pull.address, pki.ca_cert)
    ctrd.ctr(
        "images", "import", "--base-name", f"{open_pull.address}/{repo}",
        write_oci_archive(layout, tmp_path / "image.tar"),
    )  # fmt: skip
    ctrd.ctr(
        "images", "push", "--hosts-dir", hosts, "--user", creds, f"{open_pull.address}/{repo}:v1"
    )

    # Without --anonymous-pull: no anonymous reads.
    result = clients.skopeo(
        "inspect",
        "--cert-dir",
        pki.cert_dir,
        "--no-creds",
        f"docker://{secure.address}/{repo}:v1",
        check=False,
    )
    expect_failure(result, *AUTH_ERRORS)
    out = open_layout(tmp_path / "denied")
    result = clients.skopeo(
        "copy",
        "--src-cert-dir",
        pki.cert_dir,
        "--src-no-creds",
        f"docker://{secure.address}/{repo}:v1",
        out.ref("v1"),
        check=False,
    )
    expect_failure(result, *AUTH_ERRORS)

    # With it: anonymous pulls work (skopeo and podman) ...
    source = f"docker://{open_pull.address}/{repo}:v1"
    inspected = clients.skopeo_inspect(source, "--cert-dir", str(pki.cert_dir), "--no-creds")
    assert inspected["Digest"] == image.digest
    pulled = open_layout(tmp_path / "anonymous")
    clients.skopeo(
        "copy", "--src-cert-dir", pki.cert_dir, "--src-no-creds", source, pulled.ref("v1")
    )
    check_layout_image(pulled, image.digest)
    for digest in image.blob_digests:
        assert pulled.read_blob(digest) == layout.read_blob(digest)
    pulled_id = clients.podman(
        "pull", "--cert-dir", pki.cert_dir, "--quiet", f"{open_pull.address}/{repo}:v1"
    ).stdout.strip()
    assert f"sha256:{pulled_id}" == image.config_digest

    # ... but anonymous pushes and deletes do not.
    other, _ = new_image(tmp_path / "other", "v2", layer_sizes=(10_000,))
    result = clients.skopeo(
        "copy",
        "--dest-cert-dir",
        pki.cert_dir,
        "--dest-no-creds",
        other.ref("v2"),
        f"docker://{open_pull.address}/{repo}:v2",
        check=False,
    )
    expect_failure(result, *AUTH_ERRORS)
    result = clients.skopeo("delete", "--cert-dir", pki.cert_dir, "--no-creds", source, check=False)
    expect_failure(result, *AUTH_ERRORS)
    assert admin(open_pull, pki).manifest(repo, "v1").digest == image.digest
    assert admin(open_pull, pki).manifest_status(repo, "v2") == 404


def test_push_with_creds_to_anonymous_pull_registry(
    clients: Clients, open_pull: RunningRegistry, pki: Pki, repo: str, tmp_path: Path
) -> None:
    layout, image = new_image(tmp_path / "src", "v1", layer_sizes=(20_000,))
    clients.skopeo(
        "copy",
        "--dest-cert-dir",
        pki.cert_dir,
        "--dest-creds",
        f"{USER}:{PASSWORD}",
        layout.ref("v1"),
        f"docker://{open_pull.address}/{repo}:v1",
    )
    assert admin(open_pull, pki).manifest(repo, "v1").digest == image.digest


def test_oras_over_tls_with_basic_auth(
    secure: RunningRegistry, pki: Pki, repo: str, tmp_path: Path
) -> None:
    """oras-py needs auth_backend="basic" (its default treats a Basic realm as a token URL)."""
    client = oras.client.OrasClient(
        hostname=secure.address, tls_verify=str(pki.ca_cert), auth_backend="basic"
    )
    client.auth.set_basic_auth(USER, PASSWORD)
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(os.urandom(40_000))
    response = client.push(
        target=f"{secure.address}/{repo}:artifact",
        files=[f"{artifact}:application/octet-stream"],
        disable_path_validation=True,
        quiet=True,
    )
    assert response.status_code == 201
    out = tmp_path / "out"
    client.pull(target=f"{secure.address}/{repo}:artifact", outdir=str(out))
    assert (out / "artifact.bin").read_bytes() == artifact.read_bytes()


def test_helm_over_tls_with_login(
    clients: Clients, secure: RunningRegistry, pki: Pki, repo: str, tmp_path: Path
) -> None:
    """helm 4 verifies 127.0.0.1's certificate with --ca-file (helm 3 used plain HTTP there)."""
    version = clients.helm("version", "--short").stdout
    if not version.startswith("v4"):
        pytest.fail(f"expected helm 4 from scripts/install-clients.sh, found {version}")
    work = tmp_path / "work"
    work.mkdir()
    clients.helm("create", "tls-chart", cwd=work)
    clients.helm("package", work / "tls-chart", "--version", "1.2.3", "--destination", work)
    package = work / "tls-chart-1.2.3.tgz"
    clients.helm(
        "registry", "login", secure.address, "-u", USER, "-p", PASSWORD, "--ca-file", pki.ca_cert
    )
    pushed = clients.helm(
        "push", package, f"oci://{secure.address}/{repo}", "--ca-file", pki.ca_cert
    )
    match = re.search(r"Digest:\s*(sha256:[0-9a-f]{64})", pushed.stdout + pushed.stderr)
    assert match
    assert admin(secure, pki).manifest(f"{repo}/tls-chart", "1.2.3").digest == match.group(1)
    out = tmp_path / "out"
    out.mkdir()
    clients.helm(
        "pull",
        f"oci://{secure.address}/{repo}/tls-chart",
        "--version",
        "1.2.3",
        "--ca-file",
        pki.ca_cert,
        "--destination",
        out,
    )
    assert (out / "tls-chart-1.2.3.tgz").read_bytes() == package.read_bytes()
