"""GET /v2/_moorage/usage: stored bytes per repository (own and shared blobs, manifests),
pulls and pushes counted by the API (GET served, not HEAD; PUT stored), admins only."""

from __future__ import annotations

from typing import Any

from moorage.meta.sqlite import SQLiteMetadata
from moorage.times import parse_time
from tests.support.app import (
    Client,
    RegistryEnv,
    assert_error,
    basic,
    get_json,
    get_manifest,
    push_image,
)
from tests.support.images import Image, config_blob, image_of, layer_blob

USAGE = "/v2/_moorage/usage"
BASE = layer_blob("shared-base", 5000)
APP = image_of(config_blob("app"), [BASE, layer_blob("app", 700)])
TOOL = image_of(config_blob("tool"), [BASE, layer_blob("tool", 300)])


def own_bytes(image: Image) -> int:
    """The image's blobs but the shared base layer."""
    return sum(blob.size for blob in image.blobs if blob.digest != BASE.digest)


async def usage(client: Client, repository: str | None = None, **headers: str) -> Any:
    params = None if repository is None else {"repository": repository}
    return (await get_json(client, USAGE, params, headers))["repositories"]


async def pull(client: Client, name: str, reference: str, times: int = 1) -> None:
    for _ in range(times):
        resp, _body = await get_manifest(client, name, reference)
        assert resp.status == 200, _body


async def test_usage_counts_bytes_pulls_and_pushes(fs_env: RegistryEnv) -> None:
    client, registry = fs_env.client, fs_env.registry
    before_push = fs_env.clock.now
    await push_image(client, "team/app", APP, "v1")
    await push_image(client, "team/app", APP, "v1")  # pushed again: a second push
    await push_image(client, "team/tool", TOOL, "latest")
    after_push = fs_env.clock.now
    await pull(client, "team/app", "v1", times=2)
    await pull(client, "team/app", APP.digest)
    head = await client.head("/v2/team/app/manifests/v1")  # not a pull
    assert head.status == 200
    missing = await client.get("/v2/team/app/manifests/nope")  # nothing served
    assert missing.status == 404
    await pull(client, "team/tool", "latest")
    after_pull = fs_env.clock.now

    # Nothing has reached the store yet: the counters live in the worker's memory.
    assert registry.usage.pending
    assert await registry.meta.manifest_pulls("team/app") == []
    assert await registry.usage.flush() == 2
    (app_pulls,) = await registry.meta.manifest_pulls("team/app")
    assert (app_pulls.digest, app_pulls.pulls) == (APP.digest, 3)  # by tag: the digest served

    rows = await usage(client)
    assert [row["name"] for row in rows] == ["team/app", "team/tool"]
    app, tool = rows
    assert {k: v for k, v in app.items() if not k.startswith("last_")} == {
        "name": "team/app",
        "manifests": 1,
        "tags": 1,
        "blobs": 3,
        "manifest_bytes": APP.size,
        "own_bytes": own_bytes(APP),
        "shared_bytes": BASE.size,
        "pulls": 3,
        "pushes": 2,
    }
    assert {k: v for k, v in tool.items() if not k.startswith("last_")} == {
        "name": "team/tool",
        "manifests": 1,
        "tags": 1,
        "blobs": 3,
        "manifest_bytes": TOOL.size,
        "own_bytes": own_bytes(TOOL),
        "shared_bytes": BASE.size,
        "pulls": 1,
        "pushes": 1,
    }
    for row in rows:
        assert before_push - 0.001 <= parse_time(row["last_push"]) <= after_push + 0.001
        assert after_push - 0.001 <= parse_time(row["last_pull"]) <= after_pull + 0.001
    assert app["last_pull"] < tool["last_pull"]
    assert await usage(client, "team/tool") == [tool]


async def test_a_repository_never_pulled_has_no_times(fs_env: RegistryEnv) -> None:
    client = fs_env.client
    assert await usage(client) == []
    lonely = await push_image(client, "lonely", image_of(config_blob("lonely")))  # by digest
    (row,) = await usage(client, "lonely")
    assert (row["pulls"], row["pushes"], row["last_pull"]) == (0, 1, None)
    assert (row["tags"], row["blobs"], row["shared_bytes"]) == (0, 1, 0)
    assert row["own_bytes"] == lonely.config.size
    assert row["last_push"] is not None


async def test_unknown_and_invalid_repositories(fs_env: RegistryEnv) -> None:
    client = fs_env.client
    await assert_error(await client.get(USAGE, params={"repository": "nope"}), 404, "NAME_UNKNOWN")
    await assert_error(
        await client.get(USAGE, params={"repository": "Bad Name"}), 400, "NAME_INVALID"
    )


async def test_the_counts_are_written_when_the_app_stops(fs_env: RegistryEnv) -> None:
    await push_image(fs_env.client, "team/app", APP, "v1")
    await pull(fs_env.client, "team/app", "v1", times=2)
    await fs_env.client.close()  # the app's cleanup: the last flush, then the store closes
    meta = SQLiteMetadata(fs_env.settings.database)
    try:
        (row,) = await meta.repository_usage("team/app")
        assert (row.pulls, row.pushes) == (2, 1)
        (pulled,) = await meta.manifest_pulls("team/app")
        assert (pulled.digest, pulled.pulls) == (APP.digest, 2)
    finally:
        await meta.close()


# -- auth -----------------------------------------------------------------------------------------


async def test_only_admins_read_usage(secured: RegistryEnv) -> None:
    client = secured.client
    resp = await client.get(USAGE)
    await assert_error(resp, 401, "UNAUTHORIZED")
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    resp = await client.get(USAGE, headers=basic("alice"))
    error = await assert_error(resp, 403, "DENIED")
    assert "alice" in error["message"]
    assert await usage(client, **basic("admin")) == []
