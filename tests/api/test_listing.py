"""GET /v2/<name>/tags/list and GET /v2/_catalog, with n/last pagination and Link headers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.app import Client, assert_error, catalog, push_blob, push_manifest, tags
from tests.support.images import config_blob, oci_manifest

NAME = "lists/app"
TAGS = ["v1", "latest", "A", "v10", "1.0", "_x", "Z-9", "v2", "a.b"]
LINK_RE = re.compile(r'^<(?P<url>[^>]+)>;\s*rel="next"$')


async def push_tags(client: Client, name: str, names: list[str]) -> None:
    config = config_blob(name)
    await push_blob(client, name, config)
    manifest = oci_manifest(config)
    for tag in names:
        await push_manifest(client, name, tag, manifest)


def next_link(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Link")
    if value is None:
        return None
    match = LINK_RE.match(value)
    assert match, value
    return match.group("url")


@pytest.fixture
async def tagged(client: Client) -> list[str]:
    await push_tags(client, NAME, TAGS)
    return sorted(TAGS)


async def test_tags_are_sorted(client: Client, tagged: list[str]) -> None:
    assert await tags(client, NAME) == tagged
    assert tagged[0] == "1.0" and tagged[-1] == "v2"


@pytest.mark.parametrize("n", [1, 2, 4, 8])
async def test_tags_pagination_with_link(client: Client, tagged: list[str], n: int) -> None:
    url: str | None = f"/v2/{NAME}/tags/list?n={n}"
    seen: list[str] = []
    pages = 0
    while url is not None:
        resp = await client.get(url)
        assert resp.status == 200
        body = await resp.json()
        assert body["name"] == NAME
        page = body["tags"]
        assert len(page) <= n
        seen += page
        pages += 1
        url = next_link(resp.headers)
        if url is not None:
            assert len(page) == n
            parts = urlsplit(url)
            assert parts.path == f"/v2/{NAME}/tags/list"
            query = parse_qs(parts.query)
            assert query["n"] == [str(n)]
            assert query["last"] == [page[-1]]
        assert pages <= len(tagged) + 1
    assert seen == tagged


async def test_tags_n_zero_is_empty_without_link(client: Client, tagged: list[str]) -> None:
    resp = await client.get(f"/v2/{NAME}/tags/list?n=0")
    assert resp.status == 200
    assert (await resp.json())["tags"] == []
    assert "Link" not in resp.headers


async def test_tags_n_larger_than_the_list(client: Client, tagged: list[str]) -> None:
    resp = await client.get(f"/v2/{NAME}/tags/list?n=100")
    assert (await resp.json())["tags"] == tagged
    assert "Link" not in resp.headers
    resp = await client.get(f"/v2/{NAME}/tags/list?n={len(tagged)}")
    assert (await resp.json())["tags"] == tagged
    assert "Link" not in resp.headers


async def test_tags_last_without_n(client: Client, tagged: list[str]) -> None:
    resp = await client.get(f"/v2/{NAME}/tags/list?last=latest")
    assert (await resp.json())["tags"] == [t for t in tagged if t > "latest"]


async def test_tags_last_that_is_not_a_tag(client: Client, tagged: list[str]) -> None:
    resp = await client.get(f"/v2/{NAME}/tags/list?last=b&n=2")
    assert (await resp.json())["tags"] == [t for t in tagged if t > "b"][:2]


async def test_tags_of_unknown_repository(client: Client) -> None:
    resp = await client.get("/v2/lists/unknown/tags/list")
    await assert_error(resp, 404, "NAME_UNKNOWN")


async def test_tags_of_a_repository_with_only_blobs(client: Client) -> None:
    await push_blob(client, "lists/blobs-only", b"data")
    assert await tags(client, "lists/blobs-only") == []


async def test_deleted_tag_disappears(client: Client, tagged: list[str]) -> None:
    resp = await client.delete(f"/v2/{NAME}/manifests/latest")
    assert resp.status == 202
    assert await tags(client, NAME) == [t for t in tagged if t != "latest"]


REPOS = ["zeta", "alpha/one", "alpha/two", "alpha", "b-c/d_e", "m.n/o", "alpha/one/deep"]


@pytest.fixture
async def repos(client: Client) -> list[str]:
    for name in REPOS:
        await push_tags(client, name, ["t"])
    return sorted(REPOS)


async def test_catalog_lists_repositories_sorted(client: Client, repos: list[str]) -> None:
    assert await catalog(client) == repos


@pytest.mark.parametrize("n", [1, 3, 7])
async def test_catalog_pagination_with_link(client: Client, repos: list[str], n: int) -> None:
    url: str | None = f"/v2/_catalog?n={n}"
    seen: list[str] = []
    while url is not None:
        resp = await client.get(url)
        assert resp.status == 200
        page = (await resp.json())["repositories"]
        assert len(page) <= n
        seen += page
        url = next_link(resp.headers)
        if url is not None:
            assert urlsplit(url).path == "/v2/_catalog"
            assert parse_qs(urlsplit(url).query)["last"] == [page[-1]]
        assert len(seen) <= len(repos)
    assert seen == repos


async def test_catalog_n_zero_and_last(client: Client, repos: list[str]) -> None:
    resp = await client.get("/v2/_catalog?n=0")
    assert (await resp.json())["repositories"] == []
    assert "Link" not in resp.headers
    resp = await client.get("/v2/_catalog?last=alpha/one")
    assert (await resp.json())["repositories"] == [r for r in repos if r > "alpha/one"]
    resp = await client.get("/v2/_catalog?last=alpha%2Fone&n=2")
    assert (await resp.json())["repositories"] == [r for r in repos if r > "alpha/one"][:2]
