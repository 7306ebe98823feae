"""Small, untimed HTTP exchanges with a registry, for setup and checks: one request on a fresh
``http.client`` connection, the target of a ``Location`` header, starting and finishing a blob
upload, checking that a blob is stored and that a wrong digest is refused, pushing the image
whose manifest the load tests fetch; and what they are made of, a content digest
(``digest_of``) and an OCI image manifest (``oci_manifest``). The timed transfers use curl or
their own connection (``transfers.py``)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from errors import BenchmarkError

if TYPE_CHECKING:
    from servers import Server

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    """The sha256 digest of ``data``, as registries name blobs and manifests."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_manifest(
    config: bytes, layer: bytes, annotations: dict[str, str], *, compact: bool = False
) -> bytes:
    """An OCI image manifest of ``config`` and one ``layer``, indented or ``compact``."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
        "annotations": annotations,
    }
    if compact:
        return json.dumps(document, separators=(",", ":")).encode()
    return json.dumps(document, indent=2).encode()


def request(
    server: Server,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = server.connection(timeout=120)
    try:
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def target_of(server: Server, location: str | None) -> str:
    """The path and query of a Location header, absolute (Distribution) or relative (moorage)."""
    if not location:
        raise BenchmarkError(f"{server.label}: response without a Location header")
    parts = urlsplit(urljoin(server.base + "/", location))
    if parts.port not in (None, server.port):
        raise BenchmarkError(f"{server.label}: Location {location!r} points elsewhere")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_digest(target: str, digest: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}digest={digest}"


def start_upload(server: Server, name: str) -> str:
    """``POST /v2/<name>/blobs/uploads/``; the new upload's target (path and query)."""
    status, headers, _ = request(server, "POST", f"/v2/{name}/blobs/uploads/")
    if status != 202:
        raise BenchmarkError(f"{server.label}: POST upload answered {status}")
    return target_of(server, headers.get("Location"))


def push_blob(server: Server, name: str, data: bytes) -> str:
    digest = digest_of(data)
    target = with_digest(start_upload(server, name), digest)
    status, _, body = request(
        server, "PUT", target, data, {"Content-Type": "application/octet-stream"}
    )
    if status != 201:
        raise BenchmarkError(f"{server.label}: PUT blob answered {status}: {body[:200]!r}")
    return digest


def check_blob(server: Server, name: str, digest: str, size: int) -> None:
    status, headers, _ = request(server, "HEAD", f"/v2/{name}/blobs/{digest}")
    length = headers.get("Content-Length")
    if status != 200 or length != str(size):
        raise BenchmarkError(
            f"{server.label}: HEAD blob {digest} answered {status}, Content-Length {length}, "
            f"expected 200 and {size}"
        )


def check_rejects_wrong_digest(server: Server) -> None:
    """A registry that stores whatever it is sent would win every upload benchmark."""
    data = os.urandom(4096)
    wrong = digest_of(data + b"x")
    target = with_digest(start_upload(server, "bench/check"), wrong)
    status, _, _ = request(server, "PUT", target, data)
    if status != 400:
        raise BenchmarkError(f"{server.label}: accepted a blob under the wrong digest ({status})")


def push_image(server: Server, name: str, tag: str) -> tuple[bytes, str]:
    """Push config + one layer + an OCI manifest under ``tag``; (manifest, its digest)."""
    layer = os.urandom(64 * 1024)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    for blob in (config, layer):
        push_blob(server, name, blob)
    manifest = oci_manifest(config, layer, {"org.opencontainers.image.title": "moorage benchmark"})
    digest = digest_of(manifest)
    status, _, body = request(
        server, "PUT", f"/v2/{name}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST}
    )
    if status != 201:
        raise BenchmarkError(f"{server.label}: PUT manifest answered {status}: {body[:300]!r}")
    for method in ("GET", "HEAD"):
        status, headers, body = request(
            server, method, f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
        )
        ok = (
            status == 200
            and headers.get("Docker-Content-Digest") == digest
            and headers.get("Content-Type", "").split(";")[0] == OCI_MANIFEST
            and headers.get("Content-Length") == str(len(manifest))
            and body == (manifest if method == "GET" else b"")
        )
        if not ok:
            raise BenchmarkError(
                f"{server.label}: {method} manifest by tag answered {status} "
                f"{dict(headers)} {body[:200]!r}"
            )
    return manifest, digest
