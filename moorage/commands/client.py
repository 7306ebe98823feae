"""A small synchronous client for the registry's ``_moorage`` extension API (stdlib only)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """The registry answered with an error (its OCI code and message) or could not be reached."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def __str__(self) -> str:
        prefix = f"{self.code}: " if self.code else ""
        return prefix + super().__str__()


@dataclass
class Client:
    registry: str
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None

    @classmethod
    def from_env(cls, registry: str | None, user: str | None, ca_file: str | None) -> Client:
        return cls(
            (registry or os.environ.get("MOORAGE_REGISTRY") or "http://127.0.0.1:5000").rstrip("/"),
            user or os.environ.get("MOORAGE_USER"),
            os.environ.get("MOORAGE_PASSWORD"),
            ca_file or os.environ.get("MOORAGE_CA_FILE"),
        )

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        url = self.registry + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.user:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"cannot reach {self.registry}: {exc}") from None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        entry = json.loads(exc.read())["errors"][0]
        return ApiError(entry["message"], entry["code"], exc.code)
    except (ValueError, KeyError, IndexError, TypeError):
        return ApiError(f"HTTP {exc.code} {exc.reason}", status=exc.code)
