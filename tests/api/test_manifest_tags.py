"""Tags named by ``tag`` query parameters on a manifest push (``PUT /v2/<name>/manifests/<digest>
?tag=a&tag=b``): every tag applied in the manifest's transaction, each listed in ``OCI-Tag``,
all or none under the tag policy, with their limits and validation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import ClientResponse

from moorage.api.v2.manifests import OCI_TAG_LINE, oci_tag_lines
from moorage.registry.service import MAX_PUSH_TAGS
from tests.support.app import (
    Client,
    RegistryEnv,
    assert_error,
    history,
    install,
    prepare,
    push_blob,
    tag_digest,
)
from tests.support.images import EMPTY_CONFIG, OCI_MANIFEST, digest_of, oci_manifest
from tests.support.server import RunningRegistry

NAME = "team/app"
REQUEST_ID = "X-Request-Id"


@pytest.fixture
def client(fs_env: RegistryEnv) -> Client:
    """Tags live in the metadata store: one storage driver is enough here."""
    return fs_env.client


def tag_query(tags: Iterable[str]) -> str:
    return "&".join(f"tag={quote(tag, safe='')}" for tag in tags)


async def put(
    client: Client,
    reference: str,
    payload: bytes,
    tags: Iterable[str] = (),
    name: str = NAME,
    request_id: str | None = None,
) -> ClientResponse:
    query = tag_query(tags)
    headers = {"Content-Type": OCI_MANIFEST}
    if request_id is not None:
        headers[REQUEST_ID] = request_id
    path = f"/v2/{name}/manifests/{reference}" + (f"?{query}" if query else "")
    return await client.put(path, data=payload, headers=headers)


def oci_tags(resp: ClientResponse) -> list[str]:
    """The tags of every ``OCI-Tag`` line, in order (lines may list several, comma-separated)."""
    return [t.strip() for line in resp.headers.getall("OCI-Tag", ()) for t in line.split(",")]


async def listed(client: Client, name: str = NAME) -> list[str]:
    resp = await client.get(f"/v2/{name}/tags/list")
    if resp.status == 404:
        return []
    assert resp.status == 200, await resp.text()
    result: list[str] = (await resp.json())["tags"]
    return result


async def manifest_status(client: Client, reference: str, name: str = NAME) -> int:
    resp = await client.head(f"/v2/{name}/manifests/{reference}")
    return resp.status


# -- pushes with tag parameters -----------------------------------------------------------------


async def test_tag_parameters_on_a_push_by_digest(client: Client) -> None:
    """The spec's example: four tags in one push, each in an OCI-Tag header."""
    payload = await prepare(client, NAME, "spec-example")
    digest = digest_of(payload)
    tags = ["1.2.3", "1.2", "1", "latest"]
    resp = await put(client, digest, payload, tags)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Location"] == f"/v2/{NAME}/manifests/{digest}"
    assert oci_tags(resp) == tags
    for tag in tags:
        assert await tag_digest(client, NAME, tag) == digest
    assert await listed(client) == sorted(tags)


async def test_a_push_by_digest_without_tag_parameters_tags_nothing(client: Client) -> None:
    payload = await prepare(client, NAME, "untagged")
    resp = await put(client, digest_of(payload), payload)
    assert resp.status == 201, await resp.text()
    assert "OCI-Tag" not in resp.headers
    assert await listed(client) == []


async def test_a_push_by_tag_applies_its_tag_parameters_too(client: Client) -> None:
    """The path's tag comes first; a parameter repeating it counts once."""
    payload = await prepare(client, NAME, "by-tag")
    resp = await put(client, "v1", payload, ["latest", "v1", "stable"])
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == ["v1", "latest", "stable"]
    for tag in ("v1", "latest", "stable"):
        assert await tag_digest(client, NAME, tag) == digest_of(payload)
    # Without parameters, a push by tag names the one tag it applied.
    resp = await put(client, "solo", payload)
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == ["solo"]


async def test_a_tag_named_twice_is_applied_once(client: Client) -> None:
    payload = await prepare(client, NAME, "twice")
    resp = await put(client, digest_of(payload), payload, ["a", "b", "a", "a", "b"])
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == ["a", "b"]
    assert [e["action"] for e in await history(client, NAME, "a")] == ["created"]


async def test_history_has_a_change_per_tag(client: Client) -> None:
    first = await prepare(client, NAME, "history-1")
    second = await prepare(client, NAME, "history-2")
    one, two = digest_of(first), digest_of(second)
    resp = await put(client, one, first, ["latest", "stable"], request_id="push-one")
    assert resp.status == 201, await resp.text()
    resp = await put(client, two, second, ["latest", "edge", "stable"], request_id="push-two")
    assert resp.status == 201, await resp.text()
    expected = {
        "latest": [("moved", one, two, "push-two"), ("created", None, one, "push-one")],
        "stable": [("moved", one, two, "push-two"), ("created", None, one, "push-one")],
        "edge": [("created", None, two, "push-two")],
    }
    for tag, events in expected.items():
        got = [
            (e["action"], e["old_digest"], e["new_digest"], e["request_id"])
            for e in await history(client, NAME, tag)
        ]
        assert got == events, tag


# -- limits and validation -----------------------------------------------------------------------


async def test_at_least_ten_and_up_to_the_limit(client: Client) -> None:
    payload = await prepare(client, NAME, "many")
    digest = digest_of(payload)
    ten = [f"ten-{i}" for i in range(10)]
    resp = await put(client, digest, payload, ten)
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == ten
    most = [f"t{i:03d}" for i in range(MAX_PUSH_TAGS)]
    resp = await put(client, digest, payload, most)
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == most
    assert len(await listed(client)) == 10 + MAX_PUSH_TAGS


async def test_more_tags_than_the_limit_is_414_and_stores_nothing(client: Client) -> None:
    payload = await prepare(client, NAME, "too-many")
    digest = digest_of(payload)
    resp = await put(client, digest, payload, [f"t{i:03d}" for i in range(MAX_PUSH_TAGS + 1)])
    error = await assert_error(resp, 414, "PARAMETER_INVALID")
    assert f"at most {MAX_PUSH_TAGS}" in error["message"]
    assert await manifest_status(client, digest) == 404
    assert await listed(client) == []


BAD_TAGS = ["-leading-dash", ".leading-dot", "", "x" * 129, "a/b", "a:b", "tag with space", "é"]


@pytest.mark.parametrize("bad", BAD_TAGS)
async def test_an_invalid_tag_parameter_refuses_the_push(client: Client, bad: str) -> None:
    """The same error as the tag in a path (MANIFEST_INVALID), naming the tag; nothing is
    stored, not even the valid tags of the push."""
    payload = await prepare(client, NAME, f"bad-{len(bad)}")
    digest = digest_of(payload)
    if bad and "/" not in bad and ":" not in bad:  # in a path, those are other errors
        in_path = await client.put(
            f"/v2/{NAME}/manifests/{quote(bad, safe='')}",
            data=payload,
            headers={"Content-Type": OCI_MANIFEST},
        )
        await assert_error(in_path, 400, "MANIFEST_INVALID")
    resp = await put(client, digest, payload, ["good", bad, "fine"])
    error = await assert_error(resp, 400, "MANIFEST_INVALID")
    assert f"invalid tag {bad[:140]!r}" in error["message"], error["message"]
    assert await manifest_status(client, digest) == 404
    assert await listed(client) == []


async def test_an_invalid_tag_parameter_on_a_push_by_tag(client: Client) -> None:
    payload = await prepare(client, NAME, "bad-by-tag")
    resp = await put(client, "v1", payload, ["-nope"])
    await assert_error(resp, 400, "MANIFEST_INVALID")
    assert await listed(client) == []


def test_oci_tag_lines_fold_long_lists() -> None:
    assert oci_tag_lines([]) == []
    assert oci_tag_lines(["1.2.3", "1.2", "latest"]) == ["1.2.3, 1.2, latest"]
    longest = [f"{i:03d}" + "x" * 125 for i in range(MAX_PUSH_TAGS)]
    lines = oci_tag_lines(longest)
    assert all(len(line) <= OCI_TAG_LINE for line in lines)
    assert len(lines) < 20
    assert [t for line in lines for t in line.split(", ")] == longest


# -- the tag policy ------------------------------------------------------------------------------


async def test_one_immutable_tag_refuses_the_whole_push(client: Client) -> None:
    """1.0.0 (immutable by the "versions" rule) is held elsewhere: nothing of the push is
    applied, and only the refusal is recorded."""
    await install(client)
    held_payload = await prepare(client, NAME, "held")
    held = digest_of(held_payload)
    resp = await put(client, held, held_payload, ["1.0.0", "latest"])
    assert resp.status == 201, await resp.text()
    payload = await prepare(client, NAME, "newer")
    digest = digest_of(payload)

    resp = await put(client, digest, payload, ["latest", "1.0.0", "stable"], request_id="r-1")
    error = await assert_error(resp, 403, "DENIED")
    message = error["message"]
    assert f"{NAME}:1.0.0" in message and held in message, message
    assert "rule 'versions'" in message, message
    assert "none of the 3 tags of this push was changed" in message, message
    assert error["detail"] == {
        "repository": NAME,
        "tag": "1.0.0",
        "digest": held,
        "attempted": digest,
        "rule": "versions",
    }
    assert resp.headers[REQUEST_ID] == "r-1"
    assert "OCI-Tag" not in resp.headers

    assert await manifest_status(client, digest) == 404
    assert await tag_digest(client, NAME, "latest") == held
    assert await tag_digest(client, NAME, "stable") is None
    assert await listed(client) == ["1.0.0", "latest"]
    refused = (await history(client, NAME, "1.0.0"))[0]
    assert (refused["action"], refused["new_digest"], refused["request_id"]) == (
        "refused",
        digest,
        "r-1",
    )
    assert [e["action"] for e in await history(client, NAME, "latest")] == ["created"]
    assert await history(client, NAME, "stable") == []

    # Without the frozen tag, the same push goes through.
    resp = await put(client, digest, payload, ["latest", "stable"])
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == ["latest", "stable"]


async def test_every_refused_tag_is_named(client: Client) -> None:
    await install(client)
    held_payload = await prepare(client, NAME, "held-both")
    held = digest_of(held_payload)
    resp = await put(client, held, held_payload, ["1.0.0", "2.0.0"])
    assert resp.status == 201, await resp.text()
    payload = await prepare(client, NAME, "newer-both")
    digest = digest_of(payload)

    resp = await put(client, digest, payload, ["2.0.0", "edge", "1.0.0"])
    error = await assert_error(resp, 403, "DENIED")
    assert f"{NAME}:2.0.0" in error["message"] and f"{NAME}:1.0.0" in error["message"]
    refused = error["detail"]["refused"]
    assert [(r["tag"], r["digest"], r["attempted"], r["rule"]) for r in refused] == [
        ("2.0.0", held, digest, "versions"),
        ("1.0.0", held, digest, "versions"),
    ]
    for tag in ("1.0.0", "2.0.0"):
        assert [e["action"] for e in await history(client, NAME, tag)] == ["refused", "created"]
    assert await tag_digest(client, NAME, "edge") is None


async def test_immutable_tags_are_created_together(client: Client) -> None:
    """New immutable tags are created in one push; pushing the same digest to them again
    is allowed, like any re-push."""
    await install(client)
    payload = await prepare(client, NAME, "release")
    digest = digest_of(payload)
    for _ in range(2):
        resp = await put(client, digest, payload, ["3.1.4", "3.1", "3"])
        assert resp.status == 201, await resp.text()
        assert oci_tags(resp) == ["3.1.4", "3.1", "3"]
    for tag in ("3.1.4", "3.1"):
        assert [e["action"] for e in await history(client, NAME, tag)] == ["created"]


# -- over a real server --------------------------------------------------------------------------


async def test_the_longest_tags_up_to_the_limit_over_http(
    moorage_server: RunningRegistry,
) -> None:
    """100 tags of 128 characters make a request line of about 14 KB (past aiohttp's default
    limit of 8190 bytes): accepted, and listed in OCI-Tag lines a client can read; one more
    is refused in the OCI error format."""
    base = f"{moorage_server.url}/v2/tags/longest"
    payload = oci_manifest(EMPTY_CONFIG)
    digest = digest_of(payload)
    longest = [f"{i:03d}" + "x" * 125 for i in range(MAX_PUSH_TAGS + 1)]
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{base}/blobs/uploads/?digest={EMPTY_CONFIG.digest}",
            data=EMPTY_CONFIG.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert resp.status == 201, await resp.text()
        headers = {"Content-Type": OCI_MANIFEST}
        url = f"{base}/manifests/{digest}?{tag_query(longest)}"
        resp = await session.put(url, data=payload, headers=headers)
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 414, body
        assert body["errors"][0]["code"] == "PARAMETER_INVALID"

        url = f"{base}/manifests/{digest}?{tag_query(longest[:MAX_PUSH_TAGS])}"
        assert len(url) > 8190
        resp = await session.put(url, data=payload, headers=headers)
        assert resp.status == 201, await resp.text()
        lines = resp.headers.getall("OCI-Tag")
        assert [t.strip() for line in lines for t in line.split(",")] == longest[:-1]
        resp = await session.get(f"{base}/tags/list")
        assert sorted((await resp.json())["tags"]) == longest[:-1]


async def test_everything_immutable_in_a_new_repository(client: Client) -> None:
    """Under an all-immutable policy, a new tag named in the path and again as a parameter is
    created once; a later push naming it with a new tag creates neither."""
    await install(client, {"default": "immutable", "rules": []})
    await push_blob(client, "fresh/app", EMPTY_CONFIG)
    payload = oci_manifest(EMPTY_CONFIG, annotations={"k": "fresh"})
    resp = await put(client, "v1", payload, ["v1"], name="fresh/app")
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == ["v1"]
    other = oci_manifest(EMPTY_CONFIG, annotations={"k": "other"})
    resp = await put(client, digest_of(other), other, ["v2", "v1"], name="fresh/app")
    await assert_error(resp, 403, "DENIED")
    assert await listed(client, "fresh/app") == ["v1"]
