"""A tiny synchronous HTTP client for tests that talk to a running registry."""

from __future__ import annotations

import hashlib
import http.client
import json
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
) -> Reply:
    """One request on a new connection (so multi-worker servers spread them)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
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


def push_blob(address: str, repo: str, data: bytes) -> str:
    """Upload a blob (POST, then PUT with the whole body); its digest."""
    reply = request(address, "POST", f"/v2/{repo}/blobs/uploads/")
    assert reply.status == 202, reply.body
    digest = sha256(data)
    reply = request(address, "PUT", with_query(location_path(reply), digest=digest), data)
    assert reply.status == 201, reply.body
    return digest
