"""The one place where exceptions become HTTP responses in the OCI error format."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from moorage.errors import ErrorCode, RegistryError, StoredDataMissing, Unavailable

log = logging.getLogger("moorage.api")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


def error_response(error: RegistryError) -> web.Response:
    headers = {
        "Content-Type": "application/json",
        API_VERSION_HEADER[0]: API_VERSION_HEADER[1],
        **error.headers,
    }
    return web.Response(
        status=error.status, body=json.dumps(error.to_json()).encode(), headers=headers
    )


def exception_response(exc: BaseException) -> web.Response:
    """Map any exception raised by a handler to an OCI error response."""
    if isinstance(exc, RegistryError):
        return error_response(exc)
    if isinstance(exc, StoredDataMissing):
        log.error("stored object missing: %s", exc.key)
        return error_response(
            RegistryError(ErrorCode.BLOB_UNKNOWN, "blob data is missing from storage")
        )
    if isinstance(exc, Unavailable):
        log.error("%s: %s", exc.service, exc)
        return error_response(
            RegistryError(ErrorCode.UNKNOWN, f"{exc.service} is unavailable", status=503)
        )
    log.exception("unhandled error", exc_info=exc)
    return error_response(RegistryError(ErrorCode.UNKNOWN, "internal server error"))
