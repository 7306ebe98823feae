"""A tiny synchronous HTTP client for tests that talk to a running registry (plain HTTP, or
HTTPS given an ``ssl.SSLContext``), and pushing small images with it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def request(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """One request on a new connection (so multi-worker servers spread them); over HTTPS
    when given ``tls``, the context that trusts the server."""
    host, port = address.rsplit(":", 1)
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    else:
        conn = http.client.HTTPSConnection(host, int(port), timeout=30, context=tls)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def location_path(reply: Reply) -> str:
    location = reply.header("Location")
    assert location, f"no Location in {reply.status} {reply.body!r}"
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def with_query(path: str, **params: str) -> str:
    separator = "&" if "?" in path else "?"
    return path + separator + "&".join(f"{k}={v}" for k, v in params.items())


def push_blob(
    address: str,
    repo: str,
    data: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Upload a blob (POST, then PUT with the whole body); its digest. ``headers`` go with
    every request (``Authorization``)."""
    reply = request(address, "POST", f"/v2/{repo}/blobs/uploads/", None, headers, tls=tls)
    assert reply.status == 202, reply.body
    digest = sha256(data)
    path = with_query(location_path(reply), digest=digest)
    reply = request(address, "PUT", path, data, headers, tls=tls)
    assert reply.status == 201, reply.body
    return digest


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_image(
    address: str,
    repo: str,
    tag: str,
    *,
    tls: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Push a small image of random content (a config and one layer) as ``repo:tag``; the
    digest of its manifest. Pushing again to the same tag moves the tag to a new image."""
    seed = os.urandom(8).hex()
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = (seed.encode() + b"\n") * 64
    descriptors = [
        {
            "mediaType": media_type,
            "digest": push_blob(address, repo, data, tls=tls, headers=headers),
            "size": len(data),
        }
        for media_type, data in (
            ("application/vnd.oci.image.config.v1+json", config),
            ("application/vnd.oci.image.layer.v1.tar", layer),
        )
    ]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
    ).encode()
    reply = request(
        address,
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        manifest,
        {**(headers or {}), "Content-Type": OCI_MANIFEST},
        tls=tls,
    )
    assert reply.status == 201, reply.body
    digest = sha256(manifest)
    assert reply.header("Docker-Content-Digest") == digest
    return digest
