"""GET /v2/: the version check, and the API version header on every response."""

from __future__ import annotations

from tests.support.app import API_VERSION, Client, assert_error


async def test_base_endpoint_is_200_with_api_version_header(client: Client) -> None:
    resp = await client.get("/v2/")
    assert resp.status == 200
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]
    assert await resp.json() == {}


async def test_base_endpoint_answers_head(client: Client) -> None:
    resp = await client.head("/v2/")
    assert resp.status == 200
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]


async def test_errors_carry_the_api_version_header(client: Client) -> None:
    resp = await client.get("/v2/nothing/here/manifests/latest")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


async def test_unknown_endpoint_under_v2_is_a_json_404(client: Client) -> None:
    resp = await client.get("/v2/some/repo/not-an-endpoint")
    await assert_error(resp, 404, "UNSUPPORTED")


async def test_method_not_allowed_on_a_known_endpoint(client: Client) -> None:
    resp = await client.post("/v2/some/repo/manifests/latest", data=b"")
    await assert_error(resp, 405, "UNSUPPORTED")
    resp = await client.patch("/v2/some/repo/tags/list", data=b"")
    await assert_error(resp, 405, "UNSUPPORTED")


async def test_catalog_of_an_empty_registry(client: Client) -> None:
    resp = await client.get("/v2/_catalog")
    assert resp.status == 200
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]
    assert await resp.json() == {"repositories": []}
