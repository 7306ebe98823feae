"""Run real registry clients (skopeo, podman, buildah, ctr, helm) with their state isolated.

Every client gets its configuration, credentials, storage and caches under one scratch
directory, so tests neither read nor change the machine's container storage, ~/.docker,
~/.config/helm, ... and can run side by side. Two exceptions: podman and buildah read the
signature policy from /etc/containers/policy.json (installed with them), and containers/image
keeps its blob info cache in /var/lib/containers/cache when run as root (not configurable).
A failed command raises ``ClientError`` with the command line, exit status, stdout and stderr.

Missing programs fail the test (never skip it), naming the package that installs them
(``tests/support/programs.py``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

from tests.support.http import Reply
from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    sha256,
)
from tests.support.programs import program
from tests.support.server import RunningRegistry, stop_process
from tests.support.waiting import wait_until

#: Seconds one client command may take before the test fails.
DEFAULT_TIMEOUT = 180.0


class ClientError(AssertionError):
    """A client command exited non-zero (or timed out)."""

    def __init__(self, message: str, result: subprocess.CompletedProcess[str] | None) -> None:
        super().__init__(message)
        self.result = result

    @property
    def output(self) -> str:
        if self.result is None:
            return ""
        return f"{self.result.stdout}\n{self.result.stderr}"


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else f"[... {len(text) - limit} chars]\n{text[-limit:]}"


def run(
    command: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; on failure (with ``check``) raise ClientError."""
    argv = [str(part) for part in command]
    try:
        result = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise ClientError(
            f"timed out after {timeout}s: {' '.join(argv)}\n"
            f"--- stdout ---\n{_tail(out)}\n--- stderr ---\n{_tail(err)}",
            None,
        ) from None
    if check and result.returncode != 0:
        raise ClientError(
            f"exit status {result.returncode}: {' '.join(argv)}\n"
            f"--- stdout ---\n{_tail(result.stdout)}\n--- stderr ---\n{_tail(result.stderr)}",
            result,
        )
    return result


def docker_ref(registry: RunningRegistry, repo: str, ref: str) -> str:
    """The containers/image reference of ``repo`` at a tag or digest, e.g. for skopeo:
    ``docker://HOST:PORT/REPO:TAG`` or ``docker://HOST:PORT/REPO@sha256:...``."""
    separator = "@" if ref.startswith("sha256:") else ":"
    return f"docker://{registry.address}/{repo}{separator}{ref}"


def expect_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert a command failed and that its output mentions one of ``needles`` (any case)."""
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode != 0, f"expected {' '.join(result.args)} to fail:\n{output}"
    lowered = output.lower()
    assert any(n.lower() in lowered for n in needles), (
        f"expected one of {needles} in the output of {' '.join(result.args)}:\n{output}"
    )
    return output


class Clients:
    """The clients of one test, with all their state under ``scratch``.

    - containers/image tools (skopeo, podman, buildah): ``REGISTRY_AUTH_FILE``,
      ``CONTAINERS_REGISTRIES_CONF``, ``CONTAINERS_STORAGE_CONF`` (vfs, graphroot and runroot
      here), ``CONTAINERS_CONF`` (cgroupfs, file events, tmp dir here), a policy.json here;
      ``BUILDAH_ISOLATION=chroot``.
    - ``DOCKER_CONFIG``, ``HOME`` and the XDG directories point here too.
    - helm: ``HELM_CACHE_HOME``, ``HELM_CONFIG_HOME``, ``HELM_DATA_HOME``,
      ``HELM_REGISTRY_CONFIG``.
    """

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.storage_root = scratch / "storage"
        # podman refuses a runroot longer than 50 characters; pytest's tmp paths are longer.
        self._short_run_root: Path | None = None
        self.run_root = scratch / "run"
        if len(str(self.run_root)) > 50:
            self._short_run_root = Path(tempfile.mkdtemp(prefix="moorage-run-", dir="/tmp"))
            self.run_root = self._short_run_root
        self.tmp = scratch / "tmp"
        for directory in (
            self.storage_root,
            self.run_root,
            self.tmp,
            scratch / "home",
            scratch / "docker",
            scratch / "xdg-config",
            scratch / "xdg-data",
            scratch / "xdg-cache",
            scratch / "xdg-runtime",
            scratch / "helm" / "cache",
            scratch / "helm" / "config",
            scratch / "helm" / "data",
        ):
            directory.mkdir(parents=True, exist_ok=True)
        (scratch / "xdg-runtime").chmod(0o700)
        self.auth_file = scratch / "auth.json"
        self.auth_file.write_text('{"auths": {}}\n')
        (scratch / "docker" / "config.json").write_text('{"auths": {}}\n')
        self.policy = scratch / "policy.json"
        self.policy.write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]}, indent=2) + "\n"
        )
        self.registries_conf = scratch / "registries.conf"
        self.registries_conf.write_text(
            'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'
        )
        self.storage_conf = scratch / "storage.conf"
        self.storage_conf.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{self.storage_root}"\n'
            f'runroot = "{self.run_root}"\n'
        )
        self.containers_conf = scratch / "containers.conf"
        self.containers_conf.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{scratch / "events.log"}"\n'
            f'tmp_dir = "{self.tmp}"\n'
            f'static_dir = "{self.storage_root / "libpod"}"\n'
            f'volume_path = "{self.storage_root / "volumes"}"\n'
            'runtime = "crun"\n'
        )
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
        self.env: dict[str, str] = {k: os.environ[k] for k in keep if k in os.environ}
        self.env.update(
            {
                "HOME": str(scratch / "home"),
                "XDG_CONFIG_HOME": str(scratch / "xdg-config"),
                "XDG_DATA_HOME": str(scratch / "xdg-data"),
                "XDG_CACHE_HOME": str(scratch / "xdg-cache"),
                "XDG_RUNTIME_DIR": str(scratch / "xdg-runtime"),
                "REGISTRY_AUTH_FILE": str(self.auth_file),
                "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
                "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
                "CONTAINERS_CONF": str(self.containers_conf),
                "BUILDAH_ISOLATION": "chroot",
                "STORAGE_DRIVER": "vfs",
                "DOCKER_CONFIG": str(scratch / "docker"),
                "HELM_CACHE_HOME": str(scratch / "helm" / "cache"),
                "HELM_CONFIG_HOME": str(scratch / "helm" / "config"),
                "HELM_DATA_HOME": str(scratch / "helm" / "data"),
                "HELM_REGISTRY_CONFIG": str(scratch / "helm" / "config" / "registry.json"),
            }
        )
        self.env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")

    def close(self) -> None:
        """Remove what lives outside the scratch directory (the short runroot)."""
        if self._short_run_root is not None:
            shutil.rmtree(self._short_run_root, ignore_errors=True)
            self._short_run_root = None

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def run(
        self,
        command: Sequence[str | Path],
        *,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        cwd: Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run(command, env=self.env, cwd=cwd, check=check, timeout=timeout, input=input)

    def popen(self, command: Sequence[str | Path]) -> subprocess.Popen[str]:
        """Start a client without waiting (for concurrency tests); output is captured."""
        return subprocess.Popen(
            [str(part) for part in command],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # -- containers/image tools ------------------------------------------------------------

    def skopeo_command(self, *args: str | Path) -> list[str]:
        return [program("skopeo"), "--policy", str(self.policy), *map(str, args)]

    def skopeo(
        self, *args: str | Path, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return self.run(self.skopeo_command(*args), check=check, timeout=timeout)

    def skopeo_inspect(self, reference: str, *options: str, raw: bool = False) -> dict[str, object]:
        """``skopeo inspect [--raw] OPTIONS REFERENCE`` parsed as JSON."""
        flags = ["--raw"] if raw else []
        result = self.skopeo("inspect", *flags, *options, reference)
        loaded: dict[str, object] = json.loads(result.stdout)
        return loaded

    def podman_command(self, *args: str | Path) -> list[str]:
        return [
            program("podman"),
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "--storage-driver=vfs",
            f"--root={self.storage_root}",
            f"--runroot={self.run_root}",
            f"--tmpdir={self.tmp}",
            *map(str, args),
        ]

    def podman(
        self, *args: str | Path, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return self.run(self.podman_command(*args), check=check, timeout=timeout)

    def buildah_command(self, *args: str | Path) -> list[str]:
        return [
            program("buildah"),
            "--storage-driver=vfs",
            f"--root={self.storage_root}",
            f"--runroot={self.run_root}",
            *map(str, args),
        ]

    def buildah(
        self, *args: str | Path, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return self.run(self.buildah_command(*args), check=check, timeout=timeout)

    # -- helm --------------------------------------------------------------------------------

    def helm(
        self, *args: str | Path, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run([program("helm"), *map(str, args)], check=check, cwd=cwd)


# -- containerd --------------------------------------------------------------------------------


@dataclass
class Containerd:
    """A containerd daemon of a test's own; ``ctr`` runs against its socket."""

    root: Path
    state: Path
    socket: Path
    config: Path
    process: subprocess.Popen[bytes]
    log: Path
    hosts_dir: Path
    namespace: str = "moorage-test"

    def ctr(
        self, *args: str | Path, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        command = [
            program("ctr"),
            "--address",
            str(self.socket),
            "--namespace",
            self.namespace,
            *map(str, args),
        ]
        env = {**os.environ, "CONTAINERD_SNAPSHOTTER": "native"}
        try:
            return run(command, env=env, check=check, timeout=timeout)
        except ClientError as exc:
            log = _tail(self.logs())
            raise ClientError(f"{exc}\n--- containerd log ---\n{log}", exc.result) from None

    def trust(self, address: str, ca_cert: Path) -> Path:
        """Write ``hosts_dir/<address>/hosts.toml`` so ctr reaches ``address`` over HTTPS
        trusting ``ca_cert``; pass ``--hosts-dir`` to ctr. (ctr treats 127.0.0.1 as plain
        HTTP otherwise, and ``--tlscacert`` alone does not change that.)"""
        directory = self.hosts_dir / address
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(
            f'server = "https://{address}"\n'
            f'[host."https://{address}"]\n'
            f'  capabilities = ["pull", "resolve", "push"]\n'
            f'  ca = "{ca_cert}"\n'
        )
        return self.hosts_dir

    def content_path(self, digest: str) -> Path:
        """Where containerd keeps a blob of its content store."""
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / "io.containerd.content.v1.content" / "blobs" / algorithm / hexdigest

    def image_target(self, reference: str) -> dict[str, Any]:
        """The target descriptor of an image in containerd's image store (``ctr images ls``)."""
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == reference:
                return {"mediaType": fields[1], "digest": fields[2]}
        raise AssertionError(f"{reference} is not in containerd's image store")

    def content_digests(self) -> set[str]:
        return set(self.ctr("content", "ls", "--quiet").stdout.split())

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


def _wait_for_containerd(daemon: Containerd) -> None:
    def answers() -> bool:
        if daemon.process.poll() is not None:
            raise RuntimeError(
                f"containerd exited with {daemon.process.returncode}:\n{daemon.logs()}"
            )
        return (
            daemon.socket.exists()
            and daemon.ctr("version", check=False, timeout=10).returncode == 0
        )

    wait_until(answers, lambda: f"containerd to answer:\n{daemon.logs()}", timeout=30)


@contextlib.contextmanager
def containerd(scratch: Path) -> Iterator[Containerd]:
    """Start containerd with config, root, state and socket of its own; stop it on exit.

    The socket lives in a short directory under /tmp: a unix socket path must fit in 108
    bytes, and pytest's tmp paths can be longer.
    """
    binary = program("containerd")
    program("ctr")
    scratch.mkdir(parents=True, exist_ok=True)
    root, state, hosts_dir = scratch / "root", scratch / "state", scratch / "hosts.d"
    for directory in (root, state, hosts_dir):
        directory.mkdir(parents=True, exist_ok=True)
    socket_dir = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
    socket = socket_dir / "containerd.sock"
    config = scratch / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",'
        ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing",'
        ' "io.containerd.tracing.processor.v1.otlp"]\n'
        "[grpc]\n"
        f'  address = "{socket}"\n'
        "[ttrpc]\n"
        f'  address = "{socket}.ttrpc"\n'
        "[debug]\n"
        f'  address = "{socket}.debug"\n'
        '  level = "info"\n'
        "[metrics]\n"
        '  address = ""\n'
    )
    log = scratch / "containerd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = Containerd(root, state, socket, config, process, log, hosts_dir)
    try:
        _wait_for_containerd(daemon)
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


# -- the registry's HTTP API, to check what clients stored ---------------------------------------

#: Every manifest media type, in one comma-separated Accept header.
ACCEPT_ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])


@dataclass(frozen=True)
class StoredManifest:
    media_type: str
    digest: str
    payload: bytes

    @property
    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.payload)
        return loaded


class RegistryHttp:
    """Plain HTTP requests to the registry's /v2/ API (urllib), for checking results."""

    def __init__(
        self, base_url: str, *, ca_file: Path | None = None, auth: tuple[str, str] | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self.auth = auth

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method, headers=dict(headers or {})
        )
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                return Reply(
                    response.status, CIMultiDict(response.headers.items()), response.read()
                )
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, CIMultiDict(exc.headers.items()), exc.read())

    def manifest(self, name: str, reference: str) -> StoredManifest:
        """GET a manifest (any media type); checks the digest header against the bytes."""
        response = self.request(
            "GET", f"/v2/{name}/manifests/{reference}", {"Accept": ACCEPT_ALL_MANIFESTS}
        )
        assert response.status == 200, (
            f"GET /v2/{name}/manifests/{reference}: {response.status} {response.body!r}"
        )
        digest = response.headers["Docker-Content-Digest"]
        actual = sha256(response.body)
        assert actual == digest, f"manifest {reference} is {actual}, header says {digest}"
        if reference.startswith("sha256:"):
            assert digest == reference
        return StoredManifest(response.headers["Content-Type"], digest, response.body)

    def manifest_status(self, name: str, reference: str) -> int:
        return self.request(
            "HEAD", f"/v2/{name}/manifests/{reference}", {"Accept": ACCEPT_ALL_MANIFESTS}
        ).status

    def blob(self, name: str, digest: str) -> bytes:
        """GET a blob; checks its bytes hash to ``digest``."""
        response = self.request("GET", f"/v2/{name}/blobs/{digest}")
        assert response.status == 200, f"GET blob {digest} in {name}: {response.status}"
        actual = sha256(response.body)
        assert actual == digest, f"blob {digest} in {name} holds content with digest {actual}"
        return response.body

    def blob_status(self, name: str, digest: str) -> int:
        return self.request("HEAD", f"/v2/{name}/blobs/{digest}").status

    def tags(self, name: str) -> list[str]:
        response = self.request("GET", f"/v2/{name}/tags/list")
        assert response.status == 200, f"GET tags of {name}: {response.status} {response.body!r}"
        tags = response.json()["tags"]
        assert isinstance(tags, list)
        return [str(tag) for tag in tags or []]

    def referrers(self, name: str, digest: str, artifact_type: str | None = None) -> Reply:
        query = f"?artifactType={urllib.parse.quote(artifact_type)}" if artifact_type else ""
        return self.request("GET", f"/v2/{name}/referrers/{digest}{query}")

    def check_image(self, name: str, reference: str) -> StoredManifest:
        """Check an image manifest and every blob it references are served intact."""
        stored = self.manifest(name, reference)
        body = stored.json
        for descriptor in [body["config"], *body["layers"]]:
            data = self.blob(name, descriptor["digest"])
            assert len(data) == descriptor["size"]
        return stored


# -- TLS and basic auth material ------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 (and localhost) it signed."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    #: A --cert-dir for containers/image tools: holds ca.crt only.
    cert_dir: Path


def make_pki(directory: Path) -> Pki:
    """Make the CA and server certificate with the openssl command (ECDSA P-256, 2 days)."""
    openssl = program("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    server_cert, server_key = directory / "server.crt", directory / "server.key"
    csr, extensions = directory / "server.csr", directory / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_subject = ["-subj", "/CN=moorage test CA", "-days", "2"]
    ca_extensions = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_extensions += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    run([openssl, "req", "-x509", "-new", *ec, "-keyout", ca_key, "-out", ca_cert, *ca_subject,
         *ca_extensions])  # fmt: skip
    run([openssl, "req", "-new", *ec, "-keyout", server_key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    signing: list[str | Path] = ["-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-days", "2"]
    run([openssl, "x509", "-req", "-in", csr, *signing, "-out", server_cert,
         "-extfile", extensions])  # fmt: skip
    cert_dir = directory / "certs.d"
    cert_dir.mkdir(exist_ok=True)
    shutil.copyfile(ca_cert, cert_dir / "ca.crt")
    return Pki(ca_cert, ca_key, server_cert, server_key, cert_dir)


def write_htpasswd(path: Path, users: Mapping[str, str], rounds: int = 6) -> Path:
    """An htpasswd file of bcrypt ($2b$) hashes; few rounds, to keep tests fast."""
    import bcrypt

    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
