"""moorage.certs: a CA and a serving certificate that TLS clients accept by the Service names."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from moorage.certs import issue, service_names


def handshake(issued_dir: Path, server_name: str) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(issued_dir / "tls.crt", issued_dir / "tls.key")
    client = ssl.create_default_context(cafile=str(issued_dir / "ca.crt"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=5)
        listener.close()


def test_service_names() -> None:
    assert service_names("moorage", "infra") == [
        "moorage",
        "moorage.infra",
        "moorage.infra.svc",
        "moorage.infra.svc.cluster.local",
    ]


@pytest.mark.parametrize(
    "name", ["moorage.infra.svc", "moorage.infra.svc.cluster.local", "127.0.0.1"]
)
def test_clients_trust_the_certificate_by_each_name(tmp_path: Path, name: str) -> None:
    issue(tmp_path, service_names("moorage", "infra"), ["127.0.0.1"])
    handshake(tmp_path, name)
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"


def test_other_names_are_refused(tmp_path: Path) -> None:
    issue(tmp_path, service_names("moorage", "infra"), [])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, "evil.example.com")


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    issue(tmp_path, ["a"], [])
    before = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(FileExistsError):
        issue(tmp_path, ["a"], [])
    assert (tmp_path / "ca.crt").read_bytes() == before
    issue(tmp_path, ["a"], [], overwrite=True)
    assert (tmp_path / "ca.crt").read_bytes() != before
