"""Unfinished multipart uploads: listed, sized and aborted over HTTP.

A writer's segment larger than a part is a multipart upload; a process that dies before
completing or aborting it leaves the parts stored (and billed) but invisible to listings.
obstore has no call for ListMultipartUploads, ListParts or AbortMultipartUpload, so these
requests are presigned here (``s3_sigv4.py``, with the driver's credentials, as obstore
presigns ranged reads for ``s3_ranges.py``) and sent with aiohttp's client, over TLS with
``storage.s3.ca_file`` trusted too. Only the sweep uses them, rarely: one session per sweep.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self
from xml.etree import ElementTree

import aiohttp
from yarl import URL

from moorage.storage.base import StorageError
from moorage.storage.s3_bucket import Connection
from moorage.storage.s3_config import SIGNED_RANGE_EXPIRY
from moorage.storage.s3_sigv4 import presign

log = logging.getLogger("moorage.storage.s3")

#: Longest one of these requests may take (seconds); the answers are small XML.
TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A multipart upload neither completed nor aborted."""

    path: str
    upload_id: str
    #: Unix time it was started (CreateMultipartUpload).
    initiated: float


class NotSupported(StorageError):
    """The store does not implement the request (501, NotImplemented)."""


def _name(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]  # without the namespace


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _name(child) == name]


def _text(element: ElementTree.Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "") if found else ""


def _unix_time(text: str, what: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise StorageError(f"{what}: the store sent the time {text!r}") from None


class Multipart:
    """The multipart requests for one bucket; ``async with`` opens and closes its session."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        context: ssl.SSLContext | bool = True
        if self.connection.root_certificates:
            context = ssl.create_default_context()
            context.load_verify_locations(cadata=self.connection.root_certificates.decode())
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=16),
            timeout=aiohttp.ClientTimeout(total=min(TIMEOUT, self.connection.timeout)),
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, query: Mapping[str, str], what: str
    ) -> tuple[int, ElementTree.Element | None]:
        """Send a presigned request; its status and XML body (None if empty). A 404 is an
        answer (the upload is gone) unless the store says what else is missing; any other
        failure raises StorageError (NotSupported for a 501)."""
        if self._session is None:
            raise RuntimeError("Multipart is used outside `async with`")
        connection = self.connection
        url, host = presign(
            method=method,
            endpoint=connection.endpoint,
            bucket=connection.bucket,
            path_style=connection.path_style,
            region=connection.region,
            access_key=connection.access_key,
            secret_key=connection.secret_key,
            path=path,
            query=query,
            expires=int(SIGNED_RANGE_EXPIRY),
        )
        try:
            async with self._session.request(
                method, URL(url, encoded=True), headers={"Host": host}
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StorageError(f"{what} failed: {exc or type(exc).__name__}") from exc
        try:
            document = ElementTree.fromstring(body) if body.strip() else None
        except ElementTree.ParseError as exc:
            if status < 300:
                raise StorageError(f"{what}: the store's answer is not XML: {exc}") from exc
            document = None
        code = _text(document, "Code") if document is not None and status >= 300 else ""
        if status < 300 or (status == 404 and code in ("", "NoSuchUpload")):
            return status, document
        failure = f"{what}: the store answered {status}" + (f": {code}" if code else "")
        if status == 501 or code == "NotImplemented":
            raise NotSupported(failure)
        raise StorageError(failure)

    async def unfinished(self, prefix: str) -> list[Unfinished]:
        """The multipart uploads of objects whose path starts with ``prefix``."""
        found: list[Unfinished] = []
        query = {"uploads": "", "prefix": prefix}
        what = f"listing the multipart uploads under {prefix!r}"
        while True:
            status, document = await self._request("GET", "", query, what)
            if status == 404 or document is None:
                raise StorageError(f"{what}: the store answered {status}")
            for upload in _children(document, "Upload"):
                found.append(
                    Unfinished(
                        _text(upload, "Key"),
                        _text(upload, "UploadId"),
                        _unix_time(_text(upload, "Initiated"), what),
                    )
                )
            following = {
                "key-marker": _text(document, "NextKeyMarker"),
                "upload-id-marker": _text(document, "NextUploadIdMarker"),
            }
            if _text(document, "IsTruncated").lower() != "true" or not following["key-marker"]:
                return found
            if all(query.get(name) == value for name, value in following.items()):
                raise StorageError(f"{what}: the store repeats the same page")
            query = {"uploads": "", "prefix": prefix, **following}

    async def size(self, upload: Unfinished) -> int | None:
        """Bytes in the upload's parts; None if it is gone (completed or aborted)."""
        size = 0
        query = {"uploadId": upload.upload_id}
        what = f"listing the parts of the multipart upload of {upload.path}"
        while True:
            status, document = await self._request("GET", upload.path, query, what)
            if status == 404:
                return None
            if document is None:
                raise StorageError(f"{what}: the store sent no parts")
            for part in _children(document, "Part"):
                try:
                    size += int(_text(part, "Size"))
                except ValueError:
                    raise StorageError(f"{what}: a part without a valid size") from None
            marker = _text(document, "NextPartNumberMarker")
            if _text(document, "IsTruncated").lower() != "true" or not marker:
                return size
            if query.get("part-number-marker") == marker:
                raise StorageError(f"{what}: the store repeats the same page")
            query = {"uploadId": upload.upload_id, "part-number-marker": marker}

    async def abort(self, upload: Unfinished) -> bool:
        """Abort the upload (its parts are deleted); False if it was gone already."""
        what = f"aborting the multipart upload of {upload.path}"
        status, _ = await self._request("DELETE", upload.path, {"uploadId": upload.upload_id}, what)
        return status != 404
