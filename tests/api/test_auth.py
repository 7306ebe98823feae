"""HTTP basic auth against an htpasswd file of bcrypt entries, and anonymous pull."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from tests.support.app import Client, MakeEnv, RegistryEnv, assert_error, push_seeded
from tests.support.images import Blob, digest_of

USER, PASSWORD = "alice", "s3cret:with colon"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


GOOD = basic(USER, PASSWORD)


def write_htpasswd(path: Path) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    other = bcrypt.hashpw(b"bobpw", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"# users\n{USER}:{hashed}\n\nbob:{other}\n")
    return path


async def auth_env(make_env: MakeEnv, tmp_path: Path, anonymous_pull: bool) -> RegistryEnv:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    return await make_env(auth={"htpasswd": htpasswd, "anonymous_pull": anonymous_pull})


@pytest.fixture
async def secured(make_env: MakeEnv, tmp_path: Path) -> RegistryEnv:
    return await auth_env(make_env, tmp_path, anonymous_pull=False)


@pytest.fixture
async def anonymous_pull(make_env: MakeEnv, tmp_path: Path) -> RegistryEnv:
    return await auth_env(make_env, tmp_path, anonymous_pull=True)


async def assert_challenge(client: Client, method: str, path: str, **kwargs: object) -> None:
    resp = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    if method == "HEAD":
        assert resp.status == 401
    else:
        await assert_error(resp, 401, "UNAUTHORIZED")
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Basic ")
    assert 'realm="' in challenge


async def seed(client: Client) -> str:
    """Push an image with credentials (a client session that sends them on every request)."""
    client.session.headers.update(GOOD)
    try:
        image = await push_seeded(client, "sec/app", "v1", "auth")
    finally:
        del client.session.headers["Authorization"]
    return image.digest


async def test_base_without_credentials_is_401(secured: RegistryEnv) -> None:
    await assert_challenge(secured.client, "GET", "/v2/")


@pytest.mark.parametrize(
    "headers",
    [
        basic(USER, "wrong"),
        basic("mallory", PASSWORD),
        basic(USER, ""),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Bearer abc"},
        {"Authorization": ""},
    ],
)
async def test_bad_credentials_are_401(secured: RegistryEnv, headers: dict[str, str]) -> None:
    await assert_challenge(secured.client, "GET", "/v2/", headers=headers)
    await assert_challenge(secured.client, "GET", "/v2/_catalog", headers=headers)
    await assert_challenge(
        secured.client, "POST", "/v2/sec/app/blobs/uploads/", headers=headers, data=b""
    )


async def test_right_credentials(secured: RegistryEnv) -> None:
    client = secured.client
    resp = await client.get("/v2/", headers=GOOD)
    assert resp.status == 200
    digest = await seed(client)
    resp = await client.get(f"/v2/sec/app/manifests/{digest}", headers=GOOD)
    assert resp.status == 200
    resp = await client.get("/v2/sec/app/tags/list", headers=GOOD)
    assert (await resp.json())["tags"] == ["v1"]
    resp = await client.get("/v2/_catalog", headers=GOOD)
    assert (await resp.json())["repositories"] == ["sec/app"]
    # The second user of the file works too, and the cached check keeps rejecting bad ones.
    resp = await client.get("/v2/", headers=basic("bob", "bobpw"))
    assert resp.status == 200
    await assert_challenge(client, "GET", "/v2/", headers=basic("bob", "nope"))


async def test_without_anonymous_pull_everything_needs_credentials(secured: RegistryEnv) -> None:
    client = secured.client
    digest = await seed(client)
    for path in (
        "/v2/sec/app/manifests/v1",
        f"/v2/sec/app/manifests/{digest}",
        f"/v2/sec/app/blobs/{digest_of(b'x')}",
        "/v2/sec/app/tags/list",
        f"/v2/sec/app/referrers/{digest}",
        "/v2/_catalog",
    ):
        await assert_challenge(client, "GET", path)
    await assert_challenge(client, "HEAD", "/v2/sec/app/manifests/v1")


EMPTY = {"Authorization": "Basic " + base64.b64encode(b":").decode()}


@pytest.mark.parametrize("credentials", [{}, EMPTY], ids=["no-header", "empty-basic"])
async def test_anonymous_pull(anonymous_pull: RegistryEnv, credentials: dict[str, str]) -> None:
    client = anonymous_pull.client
    digest = await seed(client)
    resp = await client.get("/v2/sec/app/manifests/v1", headers=credentials)
    assert resp.status == 200
    assert resp.headers["Docker-Content-Digest"] == digest
    resp = await client.head(f"/v2/sec/app/manifests/{digest}", headers=credentials)
    assert resp.status == 200
    layer_digest = (await (await client.get(f"/v2/sec/app/manifests/{digest}")).json())["layers"][
        0
    ]["digest"]
    resp = await client.get(f"/v2/sec/app/blobs/{layer_digest}", headers=credentials)
    assert resp.status == 200
    resp = await client.get("/v2/sec/app/tags/list", headers=credentials)
    assert resp.status == 200
    resp = await client.get("/v2/_catalog", headers=credentials)
    assert resp.status == 200


async def test_base_endpoint_challenges_even_with_anonymous_pull(
    anonymous_pull: RegistryEnv,
) -> None:
    """Clients decide from GET /v2/ whether to send credentials, so it always challenges
    a request that brings none; empty basic credentials are accepted as anonymous."""
    await assert_challenge(anonymous_pull.client, "GET", "/v2/")
    resp = await anonymous_pull.client.get("/v2/", headers=EMPTY)
    assert resp.status == 200
    resp = await anonymous_pull.client.get("/v2/", headers=GOOD)
    assert resp.status == 200


async def test_empty_credentials_without_anonymous_pull(secured: RegistryEnv) -> None:
    await assert_challenge(secured.client, "GET", "/v2/", headers=EMPTY)
    await assert_challenge(secured.client, "GET", "/v2/sec/app/tags/list", headers=EMPTY)


async def test_anonymous_pull_still_needs_credentials_to_push_and_delete(
    anonymous_pull: RegistryEnv,
) -> None:
    client = anonymous_pull.client
    digest = await seed(client)
    blob = Blob(b"anonymous push")
    await assert_challenge(client, "POST", "/v2/sec/app/blobs/uploads/", data=b"")
    await assert_challenge(client, "POST", "/v2/sec/app/blobs/uploads/", data=b"", headers=EMPTY)
    await assert_challenge(
        client, "POST", f"/v2/sec/app/blobs/uploads/?digest={blob.digest}", data=blob.data
    )
    await assert_challenge(
        client,
        "PUT",
        "/v2/sec/app/manifests/v2",
        data=b"{}",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    await assert_challenge(client, "DELETE", f"/v2/sec/app/manifests/{digest}")
    await assert_challenge(client, "DELETE", "/v2/sec/app/manifests/v1")
    # Nothing changed.
    resp = await client.get("/v2/sec/app/tags/list")
    assert (await resp.json())["tags"] == ["v1"]
    resp = await client.get(f"/v2/sec/app/blobs/{blob.digest}")
    await assert_error(resp, 404, "BLOB_UNKNOWN")
    # With credentials the same push works.
    resp = await client.post(
        f"/v2/sec/app/blobs/uploads/?digest={blob.digest}", data=blob.data, headers=GOOD
    )
    assert resp.status == 201


async def test_upload_session_steps_need_credentials(anonymous_pull: RegistryEnv) -> None:
    client = anonymous_pull.client
    resp = await client.post("/v2/sec/app/blobs/uploads/", data=b"", headers=GOOD)
    assert resp.status == 202
    location = resp.headers["Location"]
    await assert_challenge(client, "GET", location)
    await assert_challenge(client, "PATCH", location, data=b"abc")
    await assert_challenge(client, "PUT", f"{location}?digest={digest_of(b'abc')}", data=b"abc")
    await assert_challenge(client, "DELETE", location)
    resp = await client.get(location, headers=GOOD)
    assert resp.status == 204
    assert resp.headers["Range"] == "0--1"


async def test_wrong_password_with_anonymous_pull_is_still_401(
    anonymous_pull: RegistryEnv,
) -> None:
    await assert_challenge(anonymous_pull.client, "GET", "/v2/", headers=basic(USER, "bad"))
