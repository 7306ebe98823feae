"""The OCI error table and the one exception type the registry raises for client errors.

Every error the API returns is one of these codes, rendered once by ``moorage.api.errors``
as ``{"errors": [{"code", "message", "detail"}]}`` with the code's HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class _Code:
    status: int
    message: str


class ErrorCode(Enum):
    """OCI Distribution error codes (spec.md, "Error Codes"), plus the two Distribution extras."""

    BLOB_UNKNOWN = _Code(404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = _Code(400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = _Code(404, "blob upload unknown to registry")
    DIGEST_INVALID = _Code(400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = _Code(400, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = _Code(400, "manifest invalid")
    MANIFEST_UNKNOWN = _Code(404, "manifest unknown to registry")
    NAME_INVALID = _Code(400, "invalid repository name")
    NAME_UNKNOWN = _Code(404, "repository name not known to registry")
    SIZE_INVALID = _Code(400, "provided length did not match content length")
    UNAUTHORIZED = _Code(401, "authentication required")
    DENIED = _Code(403, "requested access to the resource is denied")
    UNSUPPORTED = _Code(405, "the operation is unsupported")
    TOOMANYREQUESTS = _Code(429, "too many requests")
    # Not in the OCI table, but what Distribution and clients use for these cases.
    RANGE_INVALID = _Code(416, "invalid content range")
    PAGINATION_NUMBER_INVALID = _Code(400, "invalid number of results requested")
    UNKNOWN = _Code(500, "unknown error")
    # moorage's extension API (/v2/_moorage/...); PARAMETER_INVALID also for too many tag
    # parameters on a manifest push (with 414).
    POLICY_INVALID = _Code(400, "invalid tag policy")
    PARAMETER_INVALID = _Code(400, "invalid or missing query parameter")
    EXTENSION_UNKNOWN = _Code(404, "extension is unknown")

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def default_message(self) -> str:
        return self.value.message


class RegistryError(Exception):
    """A client-visible error: an OCI code, a message, optional detail and HTTP status override."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.default_message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}
        super().__init__(f"{code.name}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return {"errors": [entry]}


class ClientDisconnected(RegistryError):
    """The client closed the connection before its request body was complete.

    A normal event (a cancelled push, a client's timeout), never a server failure: it is logged
    in one line, and nobody reads the response. ``received`` is how many bytes of the body
    arrived; ``reported`` is set by whoever logged it already.
    """

    def __init__(self, received: int) -> None:
        super().__init__(
            ErrorCode.SIZE_INVALID,
            f"the client closed the connection after {received} bytes of the request body",
        )
        self.received = received
        self.reported = False


class Unavailable(Exception):
    """A backing service (storage, the metadata store) cannot serve now; the request may
    succeed later. Answered 503, naming ``service``."""

    #: What is unavailable, as the client's message names it.
    service = "a backing service"


class StoredDataMissing(Exception):
    """Bytes the metadata says exist are missing from storage (``key``); answered as an unknown
    blob, and logged: it means the two disagree."""

    key: str
