"""The ``_moorage`` extension over the real app: tag policies enforced on push and delete, tag
history, ``at``, restore, the tags of a digest, the policy endpoints, auth, and discovery.

The policy used throughout is the README's three examples, ordered so that ``dev`` wins:
"dev/** is all mutable", "every tag that looks like a version is immutable everywhere",
"in prod/** every tag except latest is immutable".
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import ClientResponse

from moorage.times import format_time, parse_time
from tests.support.app import (
    POLICY,
    RULES,
    VERSION_TAGS,
    Client,
    RegistryEnv,
    assert_error,
    basic,
    get_json,
    history,
    install,
    prepare,
    push_manifest,
    push_seeded,
    put_policy,
    tag_digest,
)
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    manifest_descriptor,
    oci_index,
    platform,
)

CHECK = "/v2/_moorage/policy/check"
CHANGES = "/v2/_moorage/policy/changes"
DIGEST_TAGS = "/v2/_moorage/tags/digest"
REQUEST_ID = "X-Request-Id"

#: POLICY as the registry returns it: every rule with its patterns as lists, defaults filled.
NORMALIZED_RULES: list[dict[str, Any]] = [
    {"name": "dev", "mode": "mutable", "repositories": ["dev/**"], "tags": ["*"]},
    {
        "name": "versions",
        "mode": "immutable",
        "repositories": ["**"],
        "tags": VERSION_TAGS,
        "description": "v1.2.3, 1.2, 2018-05-12 never move",
    },
    {
        "name": "prod",
        "mode": "immutable",
        "repositories": ["prod/**"],
        "tags": ["*"],
        "except_tags": ["latest"],
    },
]
RULE_BY_NAME = {rule["name"]: rule for rule in NORMALIZED_RULES}


# -- helpers ------------------------------------------------------------------------------------


async def put_tag(
    client: Client, name: str, reference: str, payload: bytes, request_id: str | None = None
) -> ClientResponse:
    headers = {"Content-Type": OCI_MANIFEST}
    if request_id is not None:
        headers[REQUEST_ID] = request_id
    return await client.put(f"/v2/{name}/manifests/{reference}", data=payload, headers=headers)


async def push(
    client: Client, name: str, tag: str, seed: str, request_id: str | None = None
) -> str:
    """Push a small image to ``name:tag``; its manifest digest."""
    payload = await prepare(client, name, seed)
    resp = await put_tag(client, name, tag, payload, request_id)
    assert resp.status == 201, await resp.text()
    if request_id is not None:
        assert resp.headers[REQUEST_ID] == request_id
    return digest_of(payload)


async def manifest_status(client: Client, name: str, reference: str) -> int:
    resp = await client.get(f"/v2/{name}/manifests/{reference}")
    await resp.read()
    return resp.status


def moves(events: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(e["action"], e["old_digest"], e["new_digest"]) for e in events]


async def tag_at(client: Client, name: str, tag: str, when: str) -> dict[str, Any]:
    return await get_json(client, f"/v2/{name}/_moorage/tags/at", {"tag": tag, "time": when})


async def restore(
    client: Client, name: str, tag: str, digest: str, request_id: str | None = None
) -> ClientResponse:
    headers = {} if request_id is None else {REQUEST_ID: request_id}
    return await client.post(
        f"/v2/{name}/_moorage/tags/restore",
        params={"tag": tag, "digest": digest},
        headers=headers,
    )


def iso(timestamp: float) -> str:
    """Microsecond ISO 8601 in UTC with a Z."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def pause(env: RegistryEnv) -> None:
    """Move the registry's clock on, so that consecutive events get distinct millisecond
    times far enough apart to ask for the tag between two of them."""
    env.clock.advance(0.03)


# -- the default policy -------------------------------------------------------------------------


async def test_default_policy_leaves_every_tag_mutable(env: RegistryEnv) -> None:
    client = env.client
    body = await get_json(client, RULES)
    assert body == {"version": 0, "default": "mutable", "rules": []}
    for repository, tag in [("prod/web", "v1.2.3"), ("team/app", "2018-05-12")]:
        check = await get_json(client, CHECK, {"repository": repository, "tag": tag})
        assert check["mode"] == "mutable"
        assert check["immutable"] is False
        assert check["rule"] is None
        assert check["reason"] == "the default (mutable)"
    first = await push(client, "prod/web", "v1.2.3", "default-a")
    second = await push(client, "prod/web", "v1.2.3", "default-b")
    assert await tag_digest(client, "prod/web", "v1.2.3") == second
    resp = await client.delete("/v2/prod/web/manifests/v1.2.3")
    assert resp.status == 202, await resp.text()
    resp = await client.delete(f"/v2/prod/web/manifests/{first}")
    assert resp.status == 202, await resp.text()
    assert (await get_json(client, CHANGES))["changes"] == []


# -- the policy endpoints -------------------------------------------------------------------------


async def test_put_returns_the_policy_and_each_put_increments_the_version(
    env: RegistryEnv,
) -> None:
    client = env.client
    before = time.time()
    body = await install(client)
    assert body == {"version": 1, "default": "mutable", "rules": NORMALIZED_RULES}
    got = await get_json(client, RULES)
    updated = got.pop("updated")
    assert got == body
    assert updated["source"] == "api"
    assert updated["user"] is None
    assert updated["address"] == "127.0.0.1"
    assert before - 1 <= parse_time(updated["time"]) <= time.time() + 1

    second = await install(client, {"default": "immutable", "rules": []})
    assert second == {"version": 2, "default": "immutable", "rules": []}
    assert (await get_json(client, RULES))["version"] == 2
    third = await install(client)
    assert third["version"] == 3
    assert (await get_json(client, RULES))["rules"] == NORMALIZED_RULES


@pytest.mark.parametrize(
    ("repository", "tag", "mode", "rule"),
    [
        ("team/app", "v1.2.3", "immutable", "versions"),
        ("team/app", "1.2", "immutable", "versions"),
        ("team/app", "2018-05-12", "immutable", "versions"),
        ("a/b/c", "1.4.0-rc.1", "immutable", "versions"),
        ("team/app", "latest", "mutable", None),
        ("team/app", "today", "mutable", None),
        ("team/app", "v1", "mutable", None),
        ("prod/web", "stable", "immutable", "prod"),
        ("prod/eu/web", "main", "immutable", "prod"),
        ("prod/web", "latest", "mutable", None),
        ("prod/web", "v2.0.0", "immutable", "versions"),
        ("production/web", "stable", "mutable", None),
        ("team/prod/web", "stable", "mutable", None),
        ("dev/x", "v1.2.3", "mutable", "dev"),
        ("dev/a/b", "2018-05-12", "mutable", "dev"),
        ("dev/x", "latest", "mutable", "dev"),
    ],
)
async def test_check_each_example(
    fs_env: RegistryEnv, repository: str, tag: str, mode: str, rule: str | None
) -> None:
    await install(fs_env.client)
    body = await get_json(fs_env.client, CHECK, {"repository": repository, "tag": tag})
    assert body["repository"] == repository
    assert body["tag"] == tag
    assert body["mode"] == mode
    assert body["immutable"] is (mode == "immutable")
    if rule is None:
        assert body["rule"] is None
        assert body["reason"] == "the default (mutable)"
    else:
        assert body["rule"] == RULE_BY_NAME[rule]
        assert body["reason"] == f"rule {rule!r}"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"tag": "v1"}, 400, "PARAMETER_INVALID"),
        ({"repository": "team/app"}, 400, "PARAMETER_INVALID"),
        ({"repository": "", "tag": "v1"}, 400, "PARAMETER_INVALID"),
        ({"repository": "Team/App", "tag": "v1"}, 400, "NAME_INVALID"),
    ],
)
async def test_check_needs_a_valid_repository_and_tag(
    fs_env: RegistryEnv, params: dict[str, str], status: int, code: str
) -> None:
    resp = await fs_env.client.get(CHECK, params=params)
    await assert_error(resp, status, code)


async def test_check_refuses_an_invalid_tag(fs_env: RegistryEnv) -> None:
    resp = await fs_env.client.get(CHECK, params={"repository": "team/app", "tag": "-bad"})
    assert resp.status == 400, await resp.text()


INVALID_POLICIES: list[tuple[bytes, str]] = [
    (json.dumps({"rules": [], "extra": 1}).encode(), "extra"),
    (json.dumps({"rules": [{"name": "a", "tag": "v*", "mode": "immutable"}]}).encode(), "tag"),
    (json.dumps({"rules": [{"name": "a", "mode": "frozen"}]}).encode(), "mode"),
    (json.dumps({"rules": [{"name": "a"}]}).encode(), "mode"),
    (json.dumps({"default": "frozen"}).encode(), "default"),
    (json.dumps({"rules": [{"name": "a", "tags": "regex:(", "mode": "immutable"}]}).encode(), "("),
    (
        json.dumps(
            {"rules": [{"name": "a", "mode": "mutable"}, {"name": "a", "mode": "immutable"}]}
        ).encode(),
        "unique",
    ),
    (json.dumps({"rules": [{"name": "a", "tags": [], "mode": "immutable"}]}).encode(), "tags"),
    (json.dumps({"rules": [{"name": "a", "tags": [""], "mode": "immutable"}]}).encode(), "tags"),
    (json.dumps({"rules": [{"name": "", "mode": "immutable"}]}).encode(), "name"),
    (json.dumps({"rules": ["immutable"]}).encode(), "rules[0]: expected a table/object"),
    (json.dumps({"rules": {"name": "a", "mode": "immutable"}}).encode(), "list"),
    (b"{rules: [", "JSON"),
    (b"", "JSON"),
    (b"\xff\xfe{}", "JSON"),
    (b"[]", "object"),
    (b'"immutable"', "object"),
    (b"null", "object"),
]


@pytest.mark.parametrize(("document", "needle"), INVALID_POLICIES)
async def test_invalid_policy_is_refused_and_the_old_one_stays(
    env: RegistryEnv, document: bytes, needle: str
) -> None:
    client = env.client
    await install(client)
    before = await get_json(client, RULES)
    changes = (await get_json(client, CHANGES))["changes"]
    resp = await put_policy(client, document)
    error = await assert_error(resp, 400, "POLICY_INVALID")
    assert needle.lower() in error["message"].lower(), error
    assert await get_json(client, RULES) == before
    assert (await get_json(client, CHANGES))["changes"] == changes
    # Still enforced.
    check = await get_json(client, CHECK, {"repository": "team/app", "tag": "v1.2.3"})
    assert check["reason"] == "rule 'versions'"


async def test_policy_changes_record_who_when_where_and_both_documents(
    env: RegistryEnv,
) -> None:
    client = env.client
    start = time.time()
    await install(client, **{REQUEST_ID: "policy-1"})
    resp = await put_policy(client, {"default": "immutable"}, {REQUEST_ID: "policy-2"})
    assert resp.status == 200
    assert resp.headers[REQUEST_ID] == "policy-2"
    body = await get_json(client, CHANGES)
    changes = body["changes"]
    assert len(changes) == 2
    newest, oldest = changes
    assert oldest["id"] < newest["id"]
    assert oldest["request_id"] == "policy-1"
    assert newest["request_id"] == "policy-2"
    for change in changes:
        assert change["source"] == "api"
        assert change["user"] is None
        assert change["address"] == "127.0.0.1"
        assert start - 1 <= parse_time(change["time"]) <= time.time() + 1
    assert oldest["old"] is None
    assert oldest["new"] == {"default": "mutable", "rules": NORMALIZED_RULES}
    assert newest["old"] == oldest["new"]
    assert newest["new"] == {"default": "immutable", "rules": []}
    limited = await get_json(client, CHANGES, {"n": "1"})
    assert limited["changes"] == [newest]
    resp = await client.get(CHANGES, params={"n": "many"})
    await assert_error(resp, 400, "PAGINATION_NUMBER_INVALID")


# -- enforcement on push --------------------------------------------------------------------------

IMMUTABLE_TAGS = [
    ("team/app", "v1.2.3", "versions"),
    ("team/app", "1.2", "versions"),
    ("team/app", "2018-05-12", "versions"),
    ("prod/web", "stable", "prod"),
    ("prod/web", "v2.0.0", "versions"),
]
MUTABLE_TAGS = [
    ("team/app", "latest"),
    ("team/app", "today"),
    ("prod/web", "latest"),
    ("dev/x", "v1.2.3"),
    ("dev/x/y", "2018-05-12"),
]


@pytest.mark.parametrize(("name", "tag", "rule"), IMMUTABLE_TAGS)
async def test_moving_an_immutable_tag_is_denied_and_changes_nothing(
    env: RegistryEnv, name: str, tag: str, rule: str
) -> None:
    client = env.client
    await install(client)
    held = await push(client, name, tag, f"held-{tag}")
    other = await prepare(client, name, f"other-{tag}")
    other_digest = digest_of(other)

    resp = await put_tag(client, name, tag, other)
    error = await assert_error(resp, 403, "DENIED")
    message = error["message"]
    assert f"{name}:{tag}" in message, message
    assert held in message, message
    assert f"rule {rule!r}" in message, message
    assert error["detail"] == {
        "repository": name,
        "tag": tag,
        "digest": held,
        "attempted": other_digest,
        "rule": rule,
    }
    # Nothing changed: the tag still serves the old manifest, the refused one is not stored.
    assert await tag_digest(client, name, tag) == held
    assert await manifest_status(client, name, other_digest) == 404
    resp = await client.get(f"/v2/{name}/tags/list")
    assert (await resp.json())["tags"] == [tag]

    # The digest it holds can be pushed again; a new immutable tag can be created.
    held_payload = await prepare(client, name, f"held-{tag}")
    resp = await put_tag(client, name, tag, held_payload)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Docker-Content-Digest"] == held
    resp = await put_tag(client, name, f"{tag}-0" if "." in tag else "v9.9.9", other)
    assert resp.status == 201, await resp.text()
    assert await tag_digest(client, name, tag) == held


@pytest.mark.parametrize(("name", "tag"), MUTABLE_TAGS)
async def test_mutable_tags_move_freely(env: RegistryEnv, name: str, tag: str) -> None:
    client = env.client
    await install(client)
    first = await push(client, name, tag, f"m1-{name}-{tag}")
    second = await push(client, name, tag, f"m2-{name}-{tag}")
    assert await tag_digest(client, name, tag) == second
    third = await push(client, name, tag, f"m1-{name}-{tag}")
    assert third == first
    assert await tag_digest(client, name, tag) == first
    assert [e["action"] for e in await history(client, name, tag)] == [
        "moved",
        "moved",
        "created",
    ]


async def test_a_policy_change_applies_to_the_next_push(env: RegistryEnv) -> None:
    client = env.client
    await push(client, "team/app", "v1.2.3", "policy-a")
    second = await push(client, "team/app", "v1.2.3", "policy-b")
    await install(client)
    resp = await put_tag(client, "team/app", "v1.2.3", await prepare(client, "team/app", "c"))
    await assert_error(resp, 403, "DENIED")
    await install(client, {"default": "mutable", "rules": []})
    third = await push(client, "team/app", "v1.2.3", "policy-c")
    assert third != second
    assert await tag_digest(client, "team/app", "v1.2.3") == third


async def test_push_by_digest_is_not_affected(env: RegistryEnv) -> None:
    """An immutable policy governs tags; pushing by digest never touches a tag."""
    client = env.client
    await install(client, {"default": "immutable"})
    held = await push(client, "team/app", "anything", "digest-a")
    payload = await prepare(client, "team/app", "digest-b")
    await push_manifest(client, "team/app", digest_of(payload), payload)
    assert await tag_digest(client, "team/app", "anything") == held


# -- enforcement on delete ------------------------------------------------------------------------


async def test_deleting_an_immutable_tag_is_denied(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    held = await push(client, "team/app", "v1.2.3", "delete-a")

    resp = await client.delete("/v2/team/app/manifests/v1.2.3")
    error = await assert_error(resp, 403, "DENIED")
    assert "team/app:v1.2.3" in error["message"]
    assert held in error["message"]
    assert "rule 'versions'" in error["message"]
    assert "deleted" in error["message"]
    assert error["detail"]["attempted"] is None

    resp = await client.delete(f"/v2/team/app/manifests/{held}")
    error = await assert_error(resp, 403, "DENIED")
    assert "team/app:v1.2.3" in error["message"]
    assert held in error["message"]

    assert await tag_digest(client, "team/app", "v1.2.3") == held
    assert await manifest_status(client, "team/app", held) == 200
    assert [e["action"] for e in await history(client, "team/app", "v1.2.3")] == [
        "refused",
        "refused",
        "created",
    ]


async def test_a_manifest_with_an_immutable_and_a_mutable_tag_cannot_be_deleted(
    env: RegistryEnv,
) -> None:
    client = env.client
    await install(client)
    held = await push(client, "team/app", "v1.2.3", "both")
    await push(client, "team/app", "latest", "both")
    resp = await client.delete(f"/v2/team/app/manifests/{held}")
    await assert_error(resp, 403, "DENIED")
    assert await tag_digest(client, "team/app", "v1.2.3") == held
    assert await tag_digest(client, "team/app", "latest") == held
    # The mutable tag alone may go; the manifest stays for the immutable one.
    resp = await client.delete("/v2/team/app/manifests/latest")
    assert resp.status == 202, await resp.text()
    assert await tag_digest(client, "team/app", "latest") is None
    assert await tag_digest(client, "team/app", "v1.2.3") == held


async def test_mutable_tags_and_their_manifests_can_be_deleted(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    today = await push(client, "team/app", "today", "del-today")
    dev = await push(client, "dev/x", "v1.2.3", "del-dev")
    resp = await client.delete("/v2/team/app/manifests/today", headers={REQUEST_ID: "del-1"})
    assert resp.status == 202, await resp.text()
    assert resp.headers[REQUEST_ID] == "del-1"
    assert await tag_digest(client, "team/app", "today") is None
    assert await manifest_status(client, "team/app", today) == 200
    resp = await client.delete(f"/v2/team/app/manifests/{today}")
    assert resp.status == 202, await resp.text()
    assert await manifest_status(client, "team/app", today) == 404

    resp = await client.delete(f"/v2/dev/x/manifests/{dev}")
    assert resp.status == 202, await resp.text()
    assert await tag_digest(client, "dev/x", "v1.2.3") is None
    events = await history(client, "dev/x", "v1.2.3")
    assert moves(events) == [("deleted", dev, None), ("created", None, dev)]


async def test_deleting_a_manifest_an_immutable_index_lists_is_denied(env: RegistryEnv) -> None:
    """An immutable tag on an index freezes the platform manifests it lists: deleting one by
    digest would change what the tag serves (base.MetadataStore.delete_manifest: "The guard is
    asked for every tag that points at the manifest, or at an index that lists it")."""
    client = env.client
    await install(client)
    children: list[bytes] = []
    for arch in ("amd64", "arm64"):
        payload = await prepare(client, "team/multi", f"index-{arch}")
        await push_manifest(client, "team/multi", digest_of(payload), payload)
        children.append(payload)
    index = oci_index(
        [
            manifest_descriptor(payload, platform=platform(arch))
            for payload, arch in zip(children, ("amd64", "arm64"), strict=True)
        ]
    )
    await push_manifest(client, "team/multi", "v1.0.0", index, OCI_INDEX)
    child = digest_of(children[0])

    resp = await client.delete(f"/v2/team/multi/manifests/{child}")
    error = await assert_error(resp, 403, "DENIED")
    assert "team/multi:v1.0.0" in error["message"]
    assert await manifest_status(client, "team/multi", child) == 200


async def test_deleting_a_blob_an_immutable_tag_uses_is_denied(env: RegistryEnv) -> None:
    """An immutable tag keeps its image whole: none of its blobs can be unlinked from the
    repository (base.MetadataStore.unlink_blob), directly or through an index."""
    client = env.client
    await install(client)
    image = await push_seeded(client, "team/app", "v2.0.0", "blob-frozen")
    layer = image.layers[0].digest

    resp = await client.delete(f"/v2/team/app/blobs/{layer}", headers={REQUEST_ID: "blob-1"})
    error = await assert_error(resp, 403, "DENIED")
    assert f"blob {layer}" in error["message"]
    assert f"team/app:v2.0.0 ({image.digest})" in error["message"]
    assert "rule 'versions'" in error["message"]
    resp = await client.get(f"/v2/team/app/blobs/{layer}")
    assert resp.status == 200 and await resp.read() == image.layers[0].data
    events = await history(client, "team/app", "v2.0.0")
    assert [(e["action"], e["request_id"]) for e in events[:1]] == [("refused", "blob-1")]

    # The config blob too, when the tag is on an index listing the manifest.
    loose = await push_seeded(client, "team/idx", "latest", "blob-indexed")
    listing = oci_index([manifest_descriptor(loose.manifest, platform=platform("amd64"))])
    await push_manifest(client, "team/idx", "v3.0.0", listing, OCI_INDEX)
    resp = await client.delete(f"/v2/team/idx/blobs/{loose.config.digest}")
    error = await assert_error(resp, 403, "DENIED")
    assert "team/idx:v3.0.0" in error["message"]

    # A mutable tag's image may lose a blob, as in every registry: the caller asked for it.
    free = await push_seeded(client, "team/app", "today", "blob-free")
    resp = await client.delete(f"/v2/team/app/blobs/{free.layers[0].digest}")
    assert resp.status == 202, await resp.text()
    resp = await client.get(f"/v2/team/app/blobs/{free.layers[0].digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")


# -- history -----------------------------------------------------------------------------------


async def test_history_lists_every_change_newest_first(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    start = time.time()
    first = await push(client, "team/app", "today", "hist-a", "req-create")
    pause(env)
    second = await push(client, "team/app", "today", "hist-b", "req-move")
    pause(env)
    resp = await client.delete("/v2/team/app/manifests/today", headers={REQUEST_ID: "req-delete"})
    assert resp.status == 202
    assert resp.headers[REQUEST_ID] == "req-delete"
    pause(env)
    resp = await restore(client, "team/app", "today", first, "req-restore")
    assert resp.status == 200, await resp.text()
    assert resp.headers[REQUEST_ID] == "req-restore"
    pause(env)
    frozen = {
        **POLICY,
        "rules": [{"name": "freeze-today", "tags": "today", "mode": "immutable"}, *POLICY["rules"]],
    }
    await install(client, frozen)
    resp = await put_tag(client, "team/app", "today", await prepare(client, "team/app", "hist-b"))
    await assert_error(resp, 403, "DENIED")
    end = time.time()

    events = await history(client, "team/app", "today")
    assert moves(events) == [
        ("refused", first, second),
        ("restored", None, first),
        ("deleted", second, None),
        ("moved", first, second),
        ("created", None, first),
    ]
    assert [e["request_id"] for e in events[1:]] == [
        "req-restore",
        "req-delete",
        "req-move",
        "req-create",
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)
    times = [parse_time(e["time"]) for e in events]
    assert times == sorted(times, reverse=True)
    for event in events:
        assert (event["repository"], event["tag"]) == ("team/app", "today")
        assert start - 1 <= parse_time(event["time"]) <= end + 1
        assert event["time"].endswith("Z")
        assert event["user"] is None
        assert event["address"] == "127.0.0.1"
        assert event["request_id"]
    refused = events[0]
    assert refused["rule"] == "freeze-today"
    assert "team/app:today" in refused["reason"]
    assert first in refused["reason"]
    for event in events[1:]:
        assert event["rule"] is None
        assert event["reason"] is None


async def test_a_request_id_is_made_up_when_the_client_sends_none_or_a_bad_one(
    env: RegistryEnv,
) -> None:
    client = env.client
    payload = await prepare(client, "team/app", "rid")
    resp = await put_tag(client, "team/app", "a", payload)
    assert resp.status == 201
    generated = resp.headers[REQUEST_ID]
    assert len(generated) == 32
    resp = await put_tag(client, "team/app", "b", payload, "has spaces and ; semicolons")
    assert resp.status == 201
    replaced = resp.headers[REQUEST_ID]
    assert replaced != generated
    assert " " not in replaced
    assert (await history(client, "team/app", "a"))[0]["request_id"] == generated
    assert (await history(client, "team/app", "b"))[0]["request_id"] == replaced


async def test_a_refusal_echoes_the_request_id(env: RegistryEnv) -> None:
    """The refusal is recorded with the client's X-Request-Id; the 403 answer carries it back
    like every other answer to a tag change, so the client can find the event."""
    client = env.client
    await install(client)
    await push(client, "team/app", "v1.2.3", "echo-a")
    resp = await put_tag(
        client, "team/app", "v1.2.3", await prepare(client, "team/app", "echo-b"), "req-refused"
    )
    await assert_error(resp, 403, "DENIED")
    assert (await history(client, "team/app", "v1.2.3"))[0]["request_id"] == "req-refused"
    assert resp.headers.get(REQUEST_ID) == "req-refused"


async def test_history_pages_with_n_last_and_link(env: RegistryEnv) -> None:
    client = env.client
    for index in range(5):
        await push(client, "team/app", "paged", f"page-{index % 2}")
    everything = await history(client, "team/app", "paged")
    assert len(everything) == 5

    pages: list[list[dict[str, Any]]] = []
    path: str | None = "/v2/team/app/_moorage/tags/history?tag=paged&n=2"
    while path is not None:
        resp = await client.get(path)
        assert resp.status == 200, await resp.text()
        pages.append((await resp.json())["events"])
        link = resp.headers.get("Link")
        if link is None:
            path = None
        else:
            assert link.endswith('>; rel="next"'), link
            path = link[1 : link.index(">")]
            assert path.startswith("/v2/team/app/_moorage/tags/history?")
            assert "tag=paged" in path
            assert "n=2" in path
            assert f"last={pages[-1][-1]['id']}" in path
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [e for page in pages for e in page] == everything

    exact = await client.get("/v2/team/app/_moorage/tags/history?tag=paged&n=5")
    assert len((await exact.json())["events"]) == 5
    assert "Link" not in exact.headers
    after = await history(client, "team/app", "paged", {"last": str(everything[1]["id"])})
    assert after == everything[2:]
    empty = await client.get("/v2/team/app/_moorage/tags/history?tag=paged&n=0")
    assert (await empty.json())["events"] == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "PARAMETER_INVALID"),
        ("tag=", "PARAMETER_INVALID"),
        ("tag=paged&n=-1", "PAGINATION_NUMBER_INVALID"),
        ("tag=paged&n=x", "PAGINATION_NUMBER_INVALID"),
        ("tag=paged&last=abc", "PAGINATION_NUMBER_INVALID"),
    ],
)
async def test_history_parameters_are_checked(fs_env: RegistryEnv, query: str, code: str) -> None:
    resp = await fs_env.client.get(f"/v2/team/app/_moorage/tags/history?{query}")
    await assert_error(resp, 400, code)


async def test_history_of_an_unknown_tag_is_empty(fs_env: RegistryEnv) -> None:
    assert await history(fs_env.client, "never/pushed", "v1") == []


async def test_history_records_the_user_and_the_refusals_of_deletions(
    env: RegistryEnv,
) -> None:
    client = env.client
    await install(client)
    held = await push(client, "team/app", "v1.2.3", "refdel")
    resp = await client.delete("/v2/team/app/manifests/v1.2.3", headers={REQUEST_ID: "rd-1"})
    await assert_error(resp, 403, "DENIED")
    event = (await history(client, "team/app", "v1.2.3"))[0]
    assert event["action"] == "refused"
    assert (event["old_digest"], event["new_digest"]) == (held, None)
    assert event["rule"] == "versions"
    assert event["request_id"] == "rd-1"
    assert "cannot be deleted" in event["reason"]


# -- at a time ------------------------------------------------------------------------------------


async def test_at_a_time(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    first = await push(client, "team/app", "today", "at-a")
    pause(env)
    second = await push(client, "team/app", "today", "at-b")
    pause(env)
    resp = await client.delete("/v2/team/app/manifests/today")
    assert resp.status == 202
    deleted, moved, created = await history(client, "team/app", "today")
    t_created, t_moved, t_deleted = (
        parse_time(created["time"]),
        parse_time(moved["time"]),
        parse_time(deleted["time"]),
    )
    assert t_created < t_moved < t_deleted

    before = await tag_at(client, "team/app", "today", iso(t_created - 60))
    assert before["digest"] is None
    assert before["event"] is None
    assert (before["name"], before["tag"]) == ("team/app", "today")

    between = (t_created + t_moved) / 2
    body = await tag_at(client, "team/app", "today", iso(between))
    assert body["digest"] == first
    assert body["event"] == created
    assert body["time"] == format_time(between)

    later = (t_moved + t_deleted) / 2
    body = await tag_at(client, "team/app", "today", iso(later))
    assert body["digest"] == second
    assert body["event"] == moved

    after = await tag_at(client, "team/app", "today", iso(t_deleted + 60))
    assert after["digest"] is None
    assert after["event"] == deleted
    assert after["event"]["action"] == "deleted"


async def test_at_accepts_iso_8601_and_unix_seconds(env: RegistryEnv) -> None:
    client = env.client
    first = await push(client, "team/app", "today", "fmt-a")
    pause(env)
    await push(client, "team/app", "today", "fmt-b")
    moved, created = await history(client, "team/app", "today")
    between = (parse_time(created["time"]) + parse_time(moved["time"])) / 2
    moment = datetime.fromtimestamp(between, UTC)
    india = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    west = moment.astimezone(timezone(timedelta(hours=-7)))
    forms = [
        moment.isoformat().replace("+00:00", "Z"),
        moment.isoformat(),
        india.isoformat(),
        west.isoformat(),
        moment.replace(tzinfo=None).isoformat(),
        repr(between),
    ]
    for form in forms:
        body = await tag_at(client, "team/app", "today", form)
        assert body["digest"] == first, form
        assert body["time"] == format_time(between), form

    assert (await tag_at(client, "team/app", "today", str(int(between) - 3600)))["digest"] is None
    date_only = await tag_at(client, "team/app", "today", "2000-01-01")
    assert date_only["time"] == "2000-01-01T00:00:00.000Z"
    assert date_only["digest"] is None
    minutes = await tag_at(client, "team/app", "today", "2001-02-03T04:05Z")
    assert minutes["time"] == "2001-02-03T04:05:00.000Z"
    offset = await tag_at(client, "team/app", "today", "2001-02-03T06:05+02:00")
    assert offset["time"] == "2001-02-03T04:05:00.000Z"
    epoch = await tag_at(client, "team/app", "today", "0")
    assert epoch["time"] == "1970-01-01T00:00:00.000Z"
    future = await tag_at(client, "team/app", "today", "2999-01-01")
    assert future["event"] == moved


async def test_at_skips_refusals(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    held = await push(client, "team/app", "v1.2.3", "skip-a")
    resp = await put_tag(client, "team/app", "v1.2.3", await prepare(client, "team/app", "b"))
    await assert_error(resp, 403, "DENIED")
    body = await tag_at(client, "team/app", "v1.2.3", iso(time.time() + 5))
    assert body["digest"] == held
    assert body["event"]["action"] == "created"


async def test_at_the_time_the_history_shows_for_a_change(env: RegistryEnv) -> None:
    """The history shows each change's time; asked for the tag at that very time, the registry
    answers with that change (not the one before it)."""
    client = env.client
    await push(client, "team/app", "today", "shown-a")
    pause(env)
    second = await push(client, "team/app", "today", "shown-b")
    moved = (await history(client, "team/app", "today"))[0]
    body = await tag_at(client, "team/app", "today", moved["time"])
    assert body["digest"] == second, (moved, body)


@pytest.mark.parametrize(
    "when", ["yesterday", "2026-13-01", "2026-05-12T25:00Z", "12:00", "nan", "inf", " "]
)
async def test_at_refuses_a_bad_time(fs_env: RegistryEnv, when: str) -> None:
    resp = await fs_env.client.get(
        "/v2/team/app/_moorage/tags/at", params={"tag": "today", "time": when}
    )
    error = await assert_error(resp, 400, "PARAMETER_INVALID")
    assert "time" in error["message"]


@pytest.mark.parametrize(
    "when",
    ["1e20", "-1e20", "1778580000000", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00+01:00"],
)
async def test_at_refuses_a_time_out_of_range(fs_env: RegistryEnv, when: str) -> None:
    """Parseable but outside what the registry can represent: a client error, not a 500."""
    resp = await fs_env.client.get(
        "/v2/team/app/_moorage/tags/at", params={"tag": "today", "time": when}
    )
    await assert_error(resp, 400, "PARAMETER_INVALID")


async def test_at_needs_tag_and_time(fs_env: RegistryEnv) -> None:
    for params in ({"tag": "today"}, {"time": "2026-01-01"}, {"tag": "today", "time": ""}):
        resp = await fs_env.client.get("/v2/team/app/_moorage/tags/at", params=params)
        await assert_error(resp, 400, "PARAMETER_INVALID")


# -- restore ------------------------------------------------------------------------------------


async def test_restore_moves_a_mutable_tag_back(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    first = await push(client, "team/app", "today", "rest-a")
    second = await push(client, "team/app", "today", "rest-b")
    resp = await restore(client, "team/app", "today", first, "req-r")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "name": "team/app",
        "tag": "today",
        "digest": first,
        "previous_digest": second,
    }
    assert await tag_digest(client, "team/app", "today") == first
    event = (await history(client, "team/app", "today"))[0]
    assert (event["action"], event["old_digest"], event["new_digest"]) == (
        "restored",
        second,
        first,
    )
    assert event["request_id"] == "req-r"

    # Restoring the digest it holds changes nothing and records nothing.
    resp = await restore(client, "team/app", "today", first)
    assert resp.status == 200
    assert (await resp.json())["previous_digest"] == first
    assert len(await history(client, "team/app", "today")) == 3


async def test_restore_is_denied_for_an_immutable_tag_pointing_elsewhere(
    env: RegistryEnv,
) -> None:
    client = env.client
    await install(client)
    held = await push(client, "team/app", "v1.2.3", "imm-a")
    other = await push(client, "team/app", "latest", "imm-b")
    resp = await restore(client, "team/app", "v1.2.3", other, "req-denied")
    error = await assert_error(resp, 403, "DENIED")
    assert "team/app:v1.2.3" in error["message"]
    assert held in error["message"]
    assert "rule 'versions'" in error["message"]
    assert await tag_digest(client, "team/app", "v1.2.3") == held
    event = (await history(client, "team/app", "v1.2.3"))[0]
    assert (event["action"], event["old_digest"], event["new_digest"]) == ("refused", held, other)
    assert event["request_id"] == "req-denied"
    # Its own digest is fine, and so is a new immutable tag.
    resp = await restore(client, "team/app", "v1.2.3", held)
    assert resp.status == 200, await resp.text()
    resp = await restore(client, "team/app", "v1.2.4", other)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["previous_digest"] is None
    assert await tag_digest(client, "team/app", "v1.2.4") == other


async def test_restore_needs_a_manifest_of_the_repository(env: RegistryEnv) -> None:
    client = env.client
    await push(client, "team/app", "today", "need-a")
    elsewhere = await push(client, "team/other", "today", "need-b")
    for digest in (digest_of(b"not a manifest"), elsewhere):
        resp = await restore(client, "team/app", "today", digest)
        error = await assert_error(resp, 404, "MANIFEST_UNKNOWN")
        assert digest in error["message"]
    resp = await restore(client, "team/app", "today", "sha256:abc")
    await assert_error(resp, 400, "DIGEST_INVALID")
    for params in ({"tag": "today"}, {"digest": elsewhere}):
        resp = await client.post("/v2/team/app/_moorage/tags/restore", params=params)
        await assert_error(resp, 400, "PARAMETER_INVALID")
    assert len(await history(client, "team/app", "today")) == 1


async def test_restore_brings_back_a_deleted_mutable_tag(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    first = await push(client, "team/app", "today", "back-a")
    resp = await client.delete("/v2/team/app/manifests/today")
    assert resp.status == 202
    assert await tag_digest(client, "team/app", "today") is None
    resp = await restore(client, "team/app", "today", first)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["previous_digest"] is None
    assert await tag_digest(client, "team/app", "today") == first
    resp = await client.get("/v2/team/app/tags/list")
    assert "today" in (await resp.json())["tags"]
    assert moves(await history(client, "team/app", "today")) == [
        ("restored", None, first),
        ("deleted", first, None),
        ("created", None, first),
    ]


# -- the tags of a digest -----------------------------------------------------------------------


async def test_every_span_a_tag_pointed_at_a_digest(env: RegistryEnv) -> None:
    client = env.client
    await install(client)
    target = await push(client, "team/app", "today", "span-a")
    pause(env)
    assert await push(client, "team/app", "v1.0.0", "span-a") == target
    pause(env)
    assert await push(client, "other/app", "latest", "span-a") == target
    pause(env)
    await push(client, "team/app", "today", "span-b")
    pause(env)
    resp = await client.delete("/v2/other/app/manifests/latest")
    assert resp.status == 202
    pause(env)
    resp = await restore(client, "team/app", "today", target)
    assert resp.status == 200
    # A refusal is no span.
    other = await push(client, "team/app", "v2.0.0", "span-c")
    resp = await restore(client, "team/app", "v2.0.0", target)
    await assert_error(resp, 403, "DENIED")
    assert other != target

    body = await get_json(client, DIGEST_TAGS, {"digest": target})
    assert body["digest"] == target
    spans = body["tags"]
    assert [(s["repository"], s["tag"], s["current"]) for s in spans] == [
        ("team/app", "today", False),
        ("team/app", "v1.0.0", True),
        ("other/app", "latest", False),
        ("team/app", "today", True),
    ]
    today = await history(client, "team/app", "today")
    latest = await history(client, "other/app", "latest")
    version = await history(client, "team/app", "v1.0.0")
    assert (spans[0]["since"], spans[0]["until"]) == (today[2]["time"], today[1]["time"])
    assert (spans[1]["since"], spans[1]["until"]) == (version[0]["time"], None)
    assert (spans[2]["since"], spans[2]["until"]) == (latest[1]["time"], latest[0]["time"])
    assert (spans[3]["since"], spans[3]["until"]) == (today[0]["time"], None)

    unknown = await get_json(client, DIGEST_TAGS, {"digest": digest_of(b"nothing")})
    assert unknown["tags"] == []
    resp = await client.get(DIGEST_TAGS, params={"digest": "sha256:xyz"})
    await assert_error(resp, 400, "DIGEST_INVALID")
    resp = await client.get(DIGEST_TAGS)
    await assert_error(resp, 400, "PARAMETER_INVALID")


async def test_deleting_a_manifest_closes_the_spans_of_its_tags(env: RegistryEnv) -> None:
    client = env.client
    target = await push(client, "team/app", "one", "close")
    await push(client, "team/app", "two", "close")
    resp = await client.delete(f"/v2/team/app/manifests/{target}")
    assert resp.status == 202
    spans = (await get_json(client, DIGEST_TAGS, {"digest": target}))["tags"]
    assert [(s["tag"], s["current"]) for s in spans] == [("one", False), ("two", False)]
    assert all(s["until"] is not None for s in spans)


# -- auth -----------------------------------------------------------------------------------------


async def test_only_admins_change_the_policy(secured: RegistryEnv) -> None:
    client = secured.client
    resp = await put_policy(client, POLICY)
    error = await assert_error(resp, 401, "UNAUTHORIZED")
    assert error["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    resp = await put_policy(client, POLICY, basic("alice"))
    error = await assert_error(resp, 403, "DENIED")
    assert "alice" in error["message"]
    assert (await get_json(client, RULES, headers=basic("alice")))["version"] == 0

    resp = await put_policy(client, POLICY, basic("admin"))
    assert resp.status == 200, await resp.text()
    body = await get_json(client, RULES, headers=basic("alice"))
    assert body["version"] == 1
    assert body["updated"]["user"] == "admin"
    change = (await get_json(client, CHANGES, headers=basic("alice")))["changes"][0]
    assert change["user"] == "admin"
    # Reading needs credentials too.
    for path in (RULES, CHANGES, "/v2/team/app/_moorage/tags/history?tag=v1"):
        resp = await client.get(path)
        await assert_error(resp, 401, "UNAUTHORIZED")


async def test_history_records_the_user(secured: RegistryEnv) -> None:
    client = secured.client
    await install(client, POLICY, **basic("admin"))
    client.session.headers.update(basic("alice"))
    try:
        first = await push(client, "team/app", "v1.2.3", "user-a")
        other = await push(client, "team/app", "today", "user-b")
        resp = await put_tag(
            client, "team/app", "v1.2.3", await prepare(client, "team/app", "user-b")
        )
        await assert_error(resp, 403, "DENIED")
        resp = await restore(client, "team/app", "today", first)
        assert resp.status == 200
    finally:
        del client.session.headers["Authorization"]
    events = await history(client, "team/app", "v1.2.3", headers=basic("alice"))
    assert [(e["action"], e["user"]) for e in events] == [
        ("refused", "alice"),
        ("created", "alice"),
    ]
    today = await get_json(
        client, "/v2/team/app/_moorage/tags/history", {"tag": "today"}, basic("admin")
    )
    assert [(e["action"], e["user"], e["new_digest"]) for e in today["events"]] == [
        ("restored", "alice", first),
        ("created", "alice", other),
    ]


# -- discovery, docs, unknown paths --------------------------------------------------------------

ENDPOINTS = [
    "_moorage/docs",
    "_moorage/tags/history",
    "_moorage/tags/at",
    "_moorage/tags/restore",
    "_moorage/tags/digest",
    "_moorage/policy/rules",
    "_moorage/policy/check",
    "_moorage/policy/changes",
    "_moorage/pins",
    "_moorage/gc",
    "_moorage/usage",
]


@pytest.mark.parametrize("path", ["/v2/_oci/ext/discover", "/v2/team/app/_oci/ext/discover"])
async def test_discover_lists_the_extension(fs_env: RegistryEnv, path: str) -> None:
    body = await get_json(fs_env.client, path)
    extensions = {e["name"]: e for e in body["extensions"]}
    moorage = extensions["_moorage"]
    assert moorage["url"] == "/v2/_moorage/docs"
    assert moorage["description"]
    assert sorted(moorage["endpoints"]) == sorted(ENDPOINTS)


async def test_docs(fs_env: RegistryEnv) -> None:
    resp = await fs_env.client.get("/v2/_moorage/docs")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/")
    text = await resp.text()
    for endpoint in ENDPOINTS:
        if endpoint != "_moorage/docs":
            assert endpoint in text, endpoint
    assert "/v2/_oci/ext/discover" in text


@pytest.mark.parametrize(
    "path",
    [
        "/v2/_moorage/nothing",
        "/v2/_moorage/tags/nothing",
        "/v2/_moorage/policy/nothing",
        "/v2/team/app/_moorage/nothing",
        "/v2/team/app/_moorage/tags/nothing",
    ],
)
async def test_unknown_extension_path(fs_env: RegistryEnv, path: str) -> None:
    resp = await fs_env.client.get(path)
    await assert_error(resp, 404, "EXTENSION_UNKNOWN")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", RULES),
        ("POST", RULES),
        ("POST", "/v2/_moorage/docs"),
        ("PUT", CHECK),
        ("DELETE", CHANGES),
        ("POST", DIGEST_TAGS),
        ("POST", "/v2/_oci/ext/discover"),
        ("GET", "/v2/team/app/_moorage/tags/restore?tag=a&digest=sha256:0"),
        ("PUT", "/v2/team/app/_moorage/tags/history?tag=a"),
        ("DELETE", "/v2/team/app/_moorage/tags/at"),
    ],
)
async def test_wrong_method(fs_env: RegistryEnv, method: str, path: str) -> None:
    resp = await fs_env.client.request(method, path)
    await assert_error(resp, 405, "UNSUPPORTED")


async def test_only_admins_collect_garbage(secured: RegistryEnv) -> None:
    client = secured.client
    for method in ("GET", "POST"):
        resp = await client.request(method, "/v2/_moorage/gc")
        await assert_error(resp, 401, "UNAUTHORIZED")
        resp = await client.request(method, "/v2/_moorage/gc", headers=basic("alice"))
        error = await assert_error(resp, 403, "DENIED")
        assert "alice" in error["message"]
    resp = await client.get("/v2/_moorage/gc?summary", headers=basic("admin"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["dry_run"] is True
