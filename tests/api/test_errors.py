"""moorage.api.errors: failures of the backends become 503s in the OCI error format."""

from __future__ import annotations

import json

from moorage.api.errors import exception_response
from moorage.meta.errors import MetadataUnavailable
from moorage.meta.postgres.schema import SchemaVersionError


def test_an_unavailable_metadata_store_is_a_503() -> None:
    for exc in (MetadataUnavailable("PostgreSQL at x is unavailable"), SchemaVersionError(0, 1)):
        response = exception_response(exc)
        assert response.status == 503
        assert response.body is not None
        body = json.loads(bytes(response.body))
        assert body["errors"][0]["code"] == "UNKNOWN"
        assert "unavailable" in body["errors"][0]["message"]
