"""The container image (``make image``): reproducible, runs ``moorage serve`` as a non-root user
on a read-only root filesystem, and goes through a registry with its SBOM attached.

The image is built twice per session by ``packaging/image/build.py``, each time from
scratch: mmdebstrap downloads the Debian indexes and packages and installs them, moorage's
wheel is built, pip installs it with its pinned dependencies, bytecode is compiled, the layers
and the JSON documents are written. Only pip's downloaded wheels are shared between the two
builds (a cache of files named by their versions, fetched again if absent). So whatever could
differ between two builds (file times, directory order, package scripts' output, bytecode, the
order of JSON keys, gzip headers) gets its chance to. Both builds read one snapshot of the
checkout, so a file edited during the session cannot pass for non-determinism.

Then the image runs under podman with ``--read-only`` (no tmpfs either) and only its data
directory mounted, takes a push of itself and of its SBOM (skopeo), lists the SBOM as a
referrer, and gives the image back unchanged.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moorage_image.build import IMAGE_NAME, PORT, sbom_ref_name
from moorage_image.layout import ReadLayout
from moorage_image.rootfs import DATA, GID, UID, VENV

from tests.support.clients import Clients, RegistryHttp
from tests.support.programs import REPO_ROOT, program
from tests.support.server import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.clients

BUILD_SCRIPT = REPO_ROOT / "packaging" / "image" / "build.py"
#: Seconds one build may take (about one minute here: mmdebstrap, pip, compileall, gzip).
BUILD_TIMEOUT = 900
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
SPDX = "application/spdx+json"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


# -- building --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    layout: Path
    digest: str
    seconds: float
    log: str

    @property
    def read(self) -> ReadLayout:
        return ReadLayout(self.layout)

    @property
    def reference(self) -> str:
        return f"oci:{self.layout}:{VERSION}"

    @property
    def sbom_reference(self) -> str:
        return f"oci:{self.layout}:{sbom_ref_name(VERSION)}"

    @property
    def sbom_digest(self) -> str:
        return str(self.read.tagged(sbom_ref_name(VERSION))["digest"])

    def manifest(self) -> dict[str, Any]:
        return self.read.json_blob(self.digest)

    def config(self) -> dict[str, Any]:
        return self.read.json_blob(self.manifest()["config"]["digest"])

    def layer_path(self, index: int) -> Path:
        digest = self.manifest()["layers"][index]["digest"]
        return self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def git(checkout: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def build(checkout: Path, scratch: Path) -> Build:
    program("mmdebstrap")
    if os.geteuid() != 0:
        pytest.fail(
            "building the image needs root (mmdebstrap's root mode, chroot): run the tests as "
            "root, as make test and CI do",
            pytrace=False,
        )
    output = scratch / "image"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(BUILD_SCRIPT),
            "--project",
            str(checkout),
            "--output",
            str(output),
            "--work",
            str(scratch / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"the image build failed ({result.returncode}):\n{result.stderr[-6000:]}")
    digest = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), result.stdout
    return Build(output, digest, time.monotonic() - started, result.stderr)


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout: its git directory and every file git does not ignore."""
    snapshot = tmp_path_factory.mktemp("checkout")
    listed = git(REPO_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file() or source.is_symlink():
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, snapshot / name, follow_symlinks=False)
    shutil.copytree(REPO_ROOT / ".git", snapshot / ".git", symlinks=True)
    return snapshot


@pytest.fixture(scope="session")
def image(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    return build(checkout, tmp_path_factory.mktemp("build-1"))


@pytest.fixture(scope="session")
def image_again(image: Build, checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    return build(checkout, tmp_path_factory.mktemp("build-2"))


# -- reading layers --------------------------------------------------------------------------------


@dataclass
class LayerContents:
    """One pass over a layer: every member, the bytes of a few files, the head of each .pyc."""

    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    pyc_heads: dict[str, bytes] = field(default_factory=dict)

    def names_under(self, directory: str) -> list[str]:
        return [name for name in self.members if name.startswith(f"{directory}/")]


WANTED_FILES = re.compile(
    r"etc/(passwd|group)|var/lib/dpkg/status|opt/moorage/bin/moorage"
    r"|opt/moorage/lib/python3[.0-9]*/site-packages/[^/]+\.dist-info/METADATA"
)


@functools.cache
def layer_contents(path: Path) -> LayerContents:
    contents = LayerContents()
    with tarfile.open(path, mode="r|gz") as tar:
        for member in tar:
            contents.members[member.name] = member
            if not member.isreg():
                continue
            if WANTED_FILES.fullmatch(member.name):
                extracted = tar.extractfile(member)
                assert extracted is not None
                contents.files[member.name] = extracted.read()
            elif member.name.endswith(".pyc"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                contents.pyc_heads[member.name] = extracted.read(16)
    return contents


def dpkg_installed(status: bytes) -> dict[str, str]:
    installed = {}
    for paragraph in status.decode().split("\n\n"):
        lines = [line for line in paragraph.splitlines() if ": " in line and line[0] != " "]
        fields = dict(line.split(": ", 1) for line in lines)
        if fields.get("Status", "").endswith(" installed"):
            installed[fields["Package"]] = fields["Version"]
    return installed


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the image as built ----------------------------------------------------------------------------


def test_two_builds_from_one_checkout_give_one_digest(image: Build, image_again: Build) -> None:
    first, second = image.read, image_again.read
    if image.digest != image_again.digest:
        pytest.fail(
            f"two builds, two digests: {image.digest} ({image.seconds:.0f} s) and "
            f"{image_again.digest} ({image_again.seconds:.0f} s)\n"
            + "\n".join(differences(image, image_again)),
            pytrace=False,
        )
    assert first.index == second.index
    blobs = sorted(p.name for p in (image.layout / "blobs" / "sha256").iterdir())
    assert blobs == sorted(p.name for p in (image_again.layout / "blobs" / "sha256").iterdir())
    # Everything in the layout is reachable from its index: two manifests, a config, two
    # layers, the SBOM and the empty config of the SBOM's manifest.
    assert len(blobs) == 7


def differences(a: Build, b: Build, limit: int = 40) -> Iterator[str]:
    """What differs between two builds' layers, member by member (a failure's explanation)."""
    layers_a, layers_b = a.manifest()["layers"], b.manifest()["layers"]
    if a.config() != b.config():
        yield f"configs differ:\n{json.dumps(a.config())}\n{json.dumps(b.config())}"
    shown = 0
    for index, (la, lb) in enumerate(zip(layers_a, layers_b, strict=True)):
        if la["digest"] == lb["digest"]:
            continue
        yield f"layer {index}: {la['digest']} vs {lb['digest']}"
        ma, mb = layer_contents(a.layer_path(index)), layer_contents(b.layer_path(index))
        for name in sorted(set(ma.members) | set(mb.members)):
            x, y = ma.members.get(name), mb.members.get(name)
            summary = [
                None if m is None else (m.type, m.mode, m.uid, m.gid, m.mtime, m.size, m.linkname)
                for m in (x, y)
            ]
            heads = ma.pyc_heads.get(name), mb.pyc_heads.get(name)
            if summary[0] != summary[1] or heads[0] != heads[1]:
                yield f"  {name}: {summary[0]} {heads[0]!r} vs {summary[1]} {heads[1]!r}"
                shown += 1
                if shown >= limit:
                    return


def test_the_config_runs_moorage_serve_as_a_non_root_user_with_a_data_volume(
    image: Build, checkout: Path
) -> None:
    index = image.read.index
    assert [entry.get("annotations") for entry in index["manifests"]] == [
        {"org.opencontainers.image.ref.name": VERSION},
        {"org.opencontainers.image.ref.name": f"{VERSION}.sbom"},
    ]
    assert index["manifests"][0]["digest"] == image.digest
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert index["manifests"][1]["artifactType"] == SPDX

    manifest, config = image.manifest(), image.config()
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_GZIP, LAYER_GZIP]
    assert len(config["rootfs"]["diff_ids"]) == len(config["history"]) == 2
    process = config["config"]
    assert process["User"] == f"{UID}:{GID}" == "65532:65532"
    assert process["Entrypoint"] == ["moorage"]
    assert process["Cmd"] == ["serve"]
    assert process["WorkingDir"] == DATA == "/var/lib/moorage"
    assert process["Volumes"] == {DATA: {}}
    assert process["ExposedPorts"] == {f"{PORT}/tcp": {}} == {"5000/tcp": {}}
    env = dict(variable.split("=", 1) for variable in process["Env"])
    assert env["PATH"].startswith(f"{VENV}/bin:")
    assert env["MOORAGE_LISTEN"] == "0.0.0.0:5000"
    assert env["MOORAGE_DATA"] == DATA

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or git(checkout, "log", "-1", "--format=%ct"))
    labels = process["Labels"]
    assert labels["org.opencontainers.image.created"] == rfc3339(epoch) == config["created"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"].split("-")[0] == git(
        checkout, "rev-parse", "HEAD"
    )
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert manifest["annotations"] == labels


def test_the_layers_hold_the_system_and_the_venv_with_normalised_metadata(image: Build) -> None:
    base, venv = layer_contents(image.layer_path(0)), layer_contents(image.layer_path(1))
    epoch = int(datetime.fromisoformat(image.config()["created"]).timestamp())
    for layer in (base, venv):
        for member in layer.members.values():
            assert (member.uname, member.gname) == ("", ""), member.name
            assert member.mtime <= epoch, member.name
            assert not set(member.pax_headers) & {"atime", "ctime", "mtime"}, member.name

    # The service user, and its data directory as the only place it owns.
    assert f"moorage:x:{UID}:{GID}:" in base.files["etc/passwd"].decode()
    assert f"moorage:x:{GID}:" in base.files["etc/group"].decode()
    data = base.members[DATA.lstrip("/")]
    assert data.isdir() and (data.uid, data.gid, data.mode) == (UID, GID, 0o750)
    owned = [m.name for layer in (base, venv) for m in layer.members.values() if m.uid == UID]
    assert owned == [DATA.lstrip("/")]

    # What the runtime provides, and what the build leaves behind, is not in the image.
    for directory in ("dev", "proc", "sys", "run", "tmp"):
        assert base.members[directory].isdir() and base.names_under(directory) == []
    assert base.members["tmp"].mode == 0o1777
    leftovers = re.compile(
        r"etc/(resolv\.conf|hostname)|var/lib/apt(/.*)?|var/cache/apt(/.*)?|var/log/apt(/.*)?"
        r"|var/log/(dpkg|alternatives)\.log|var/cache/ldconfig/aux-cache|.*-old"
        r"|root/\.cache(/.*)?|usr/share/(man|locale|info)/.+"
    )
    assert [name for name in base.members if leftovers.fullmatch(name)] == []
    docs = [n for n in base.names_under("usr/share/doc") if base.members[n].isreg()]
    assert docs and all(name.endswith("/copyright") for name in docs)

    # The venv is the second layer, alone; pip and setuptools stayed in the build.
    assert not base.names_under(VENV.lstrip("/"))
    assert all(name.startswith(f"{VENV.lstrip('/')}") for name in venv.members)
    site = [n for n in venv.members if re.fullmatch(r".*/site-packages/[^/]+", n)]
    assert not [n for n in site if re.search(r"/(pip|setuptools)(-[^/]*)?$", n)]
    assert venv.files[f"{VENV.lstrip('/')}/bin/moorage"].startswith(b"#!/opt/moorage/bin/python\n")

    # Every module has its bytecode, checked against nothing at import (flags 1:
    # hash-based, unchecked): the image is read-only, so none could be written at run time.
    for layer, top in ((base, "usr/lib/python3"), (venv, VENV.lstrip("/"))):
        sources = [n for n in layer.members if n.startswith(top) and n.endswith(".py")]
        assert len(sources) > 300
        for source in sources:
            directory, _, module = source.rpartition("/")
            pyc = f"{directory}/__pycache__/{module[:-3]}.cpython-311.pyc"
            assert pyc in layer.pyc_heads, f"{source} has no {pyc}"
        flags = {int.from_bytes(head[4:8], "little") for head in layer.pyc_heads.values()}
        assert flags == {1}


def test_the_sbom_lists_every_debian_and_python_package_with_its_version(image: Build) -> None:
    layout = image.read
    sbom_manifest = layout.json_blob(image.sbom_digest)
    assert sbom_manifest["artifactType"] == SPDX
    assert sbom_manifest["subject"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.digest,
        "size": len(layout.blob(image.digest)),
    }
    assert sbom_manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    [sbom_layer] = sbom_manifest["layers"]
    assert sbom_layer["mediaType"] == SPDX
    document = layout.json_blob(sbom_layer["digest"])
    assert document["spdxVersion"] == "SPDX-2.3"
    assert document["name"] == f"{IMAGE_NAME}:{VERSION}"

    packages = document["packages"]
    [container] = [p for p in packages if p["SPDXID"] == "SPDXRef-Image"]
    assert container["checksums"] == [
        {"algorithm": "SHA256", "checksumValue": image.digest.removeprefix("sha256:")}
    ]
    kinds: dict[str, dict[str, str]] = {"deb": {}, "pypi": {}}
    for package in packages:
        purl = package["externalRefs"][0]["referenceLocator"]
        kind = purl.split("/", 1)[0].removeprefix("pkg:")
        if kind in kinds:
            kinds[kind][package["name"]] = package["versionInfo"]

    base, venv = layer_contents(image.layer_path(0)), layer_contents(image.layer_path(1))
    assert kinds["deb"] == dpkg_installed(base.files["var/lib/dpkg/status"])
    assert kinds["deb"]["python3"].startswith("3.11")
    installed = {}
    for name, metadata in venv.files.items():
        if name.endswith("/METADATA"):
            fields = dict(
                line.split(": ", 1) for line in metadata.decode().splitlines()[:20] if ": " in line
            )
            installed[fields["Name"]] = fields["Version"]
    assert kinds["pypi"] == installed
    pins = dict(
        requirement.split("==")
        for requirement in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    )
    assert kinds["pypi"]["aiohttp"] == pins["aiohttp"]
    assert kinds["pypi"]["moorage"] == VERSION
    contains = [r for r in document["relationships"] if r["relationshipType"] == "CONTAINS"]
    assert len(contains) == len(packages) - 1


# -- the image running -----------------------------------------------------------------------------


@dataclass
class Container:
    clients: Clients
    name: str
    address: str
    data: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.clients.podman(*args, check=check)

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        as_user = ["--user", user] if user is not None else []
        return self.podman("exec", *as_user, self.name, *command, check=False)

    def logs(self) -> str:
        result = self.podman("logs", self.name, check=False)
        return f"{result.stdout}{result.stderr}"

    def answers(self) -> bool:
        if self.podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip() != (
            "true"
        ):
            raise AssertionError(f"the container stopped:\n{self.logs()}")
        return RegistryHttp(self.url).request("GET", "/v2/").status == 200

    def ready(self) -> bool:
        try:
            return self.answers()
        except OSError:
            return False


@pytest.fixture(scope="module")
def container(image: Build, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image under podman as its config says (user, entrypoint, command, environment,
    working directory), with a read-only root filesystem and no tmpfs: only the data directory
    can be written. ``MOORAGE_LISTEN`` moves it to a free loopback port, reached over the
    host's network, as a Pod's environment would.

    Two settings are for sandboxed hosts: runc, since crun refuses a cgroup tree that mixes v1
    hierarchies with v2 controllers; and rlimits no higher than the host's, since podman's
    defaults (1048576 files, 32768 processes) are more than such a sandbox lets a process set.
    """
    scratch = tmp_path_factory.mktemp("container")
    clients = Clients(scratch / "clients")
    data = scratch / "data"
    data.mkdir()
    os.chown(data, UID, GID)
    port = free_port()
    name = f"moorage-image-test-{port}"
    clients.podman(
        "run",
        "--detach",
        "--name",
        name,
        "--runtime",
        program("runc"),
        "--network=host",
        "--read-only",
        "--read-only-tmpfs=false",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--env",
        f"MOORAGE_LISTEN=127.0.0.1:{port}",
        "--volume",
        f"{data}:{DATA}",
        image.reference,
        timeout=300,
    )
    running = Container(clients, name, f"127.0.0.1:{port}", data)
    try:
        wait_until(
            running.ready,
            lambda: f"the registry in the container to answer:\n{running.logs()}",
            timeout=60,
        )
        yield running
    finally:
        clients.podman("rm", "--force", "--time", "10", name, check=False)
        clients.close()


def test_the_container_serves_the_registry_as_non_root_on_a_read_only_root(
    container: Container,
) -> None:
    reply = RegistryHttp(container.url).request("GET", "/v2/")
    assert reply.status == 200, reply.body

    # Every process of the container (moorage, its workers, this exec) runs as the image's user.
    ids = container.exec("sh", "-c", "grep -h -E '^(Uid|Gid):' /proc/[0-9]*/status")
    assert ids.returncode == 0, ids.stderr
    assert set(ids.stdout.split()) == {"Uid:", "Gid:", str(UID)}, ids.stdout
    assert len(ids.stdout.splitlines()) >= 2 * 3, ids.stdout  # the server, a worker, the exec
    cmdline = container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[1:] == [f"{VENV}/bin/moorage", "serve", ""], cmdline

    # Nothing but the data directory can be written, not even by root (podman exec --user 0).
    inspected = json.loads(container.podman("inspect", container.name).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    for path in ("/opt/moorage/probe", "/tmp/probe", "/etc/probe"):
        denied = container.exec("touch", path, user="0")
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (
            path,
            denied.stderr,
        )
    written = sorted(p.name for p in container.data.iterdir())
    assert "moorage.db" in written and "storage" in written, written
    assert {p.stat().st_uid for p in container.data.iterdir()} == {UID}


def test_the_image_and_its_sbom_go_through_moorage_and_come_back_unchanged(
    container: Container, image: Build, tmp_path: Path
) -> None:
    """Pushed into the registry it runs (skopeo: the image by tag, the SBOM by digest)."""
    repository = IMAGE_NAME
    destination = f"docker://{container.address}/{repository}"
    skopeo = container.clients.skopeo
    skopeo("copy", "--dest-tls-verify=false", image.reference, f"{destination}:{VERSION}")
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        image.sbom_reference,
        f"{destination}@{image.sbom_digest}",
    )
    http = RegistryHttp(container.url)
    stored = http.check_image(repository, VERSION)
    assert stored.digest == image.digest
    assert stored.payload == image.read.blob(image.digest)
    assert http.tags(repository) == [VERSION]

    referrers = http.referrers(repository, image.digest)
    assert referrers.status == 200
    [referrer] = referrers.json()["manifests"]
    assert referrer["digest"] == image.sbom_digest
    assert referrer["artifactType"] == SPDX
    sbom_manifest = http.manifest(repository, image.sbom_digest).json
    assert sbom_manifest["subject"]["digest"] == image.digest
    document = json.loads(http.blob(repository, sbom_manifest["layers"][0]["digest"]))
    names = {package["name"] for package in document["packages"]}
    assert {"python3", "aiohttp", "moorage"} <= names

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"{destination}:{VERSION}", f"oci:{pulled}:{VERSION}")
    back = ReadLayout(pulled)
    assert back.tagged(VERSION)["digest"] == image.digest
    assert back.json_blob(image.digest) == image.manifest()
    for descriptor in image.manifest()["layers"]:
        assert back.blob(descriptor["digest"]) == image.read.blob(descriptor["digest"])
    # The registry kept what it stored in its data directory, as its own user.
    assert {p.stat().st_uid for p in (container.data / "storage").rglob("*")} == {UID}
