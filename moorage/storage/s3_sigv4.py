"""Presigned S3 URLs made here (AWS Signature Version 4, query-string form), for the requests
obstore has no call for: listing, sizing and aborting multipart uploads
(``s3_multipart.py``). obstore presigns only a method and an object path; these requests
carry query parameters (``?uploads``, ``?uploadId=``) that the signature must cover.

Pure code, checked against the example of AWS's documentation
(``tests/storage/test_s3_multipart.py``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _encode(text: str, safe: str = "") -> str:
    """URI-encode as SigV4 wants: every byte but ``A-Z a-z 0-9 - _ . ~`` (and ``safe``)."""
    return quote(text, safe="-_.~" + safe)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def presign(
    *,
    method: str,
    endpoint: str,
    bucket: str,
    path_style: bool,
    region: str,
    access_key: str,
    secret_key: str,
    path: str,
    query: Mapping[str, str],
    expires: int,
    now: datetime | None = None,
) -> tuple[str, str]:
    """A presigned URL for ``method`` on ``path`` in the bucket ("" for the bucket itself)
    with the ``query`` parameters (values may be ""), valid ``expires`` seconds from ``now``;
    with the ``Host`` header it was signed for (to send as it is). The payload is unsigned."""
    parts = urlsplit(endpoint.rstrip("/"))
    if parts.hostname is None:
        raise ValueError(f"endpoint {endpoint!r} has no host")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    base = parts.path.rstrip("/")
    if path_style:
        uri = f"{base}/{_encode(bucket)}" + (f"/{_encode(path, '/')}" if path else "")
    else:
        host = f"{bucket}.{host}"
        uri = f"{base}/{_encode(path, '/')}"
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    parameters = {
        **query,
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    canonical_query = "&".join(
        f"{name}={value}"
        for name, value in sorted((_encode(n), _encode(v)) for n, v in parameters.items())
    )
    canonical_request = "\n".join(
        (method, uri, canonical_query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD")
    )
    to_sign = "\n".join(
        (ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    url = f"{parts.scheme}://{host}{uri}?{canonical_query}&X-Amz-Signature={signature}"
    return url, host
