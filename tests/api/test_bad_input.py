"""Hostile and malformed requests: each gets the right OCI error and leaves stored data alone.

Every test starts from a registry holding known images (``Seeded``). After each bad request
the images must still be served with identical bytes and digests, the tag lists and the
catalog must be unchanged, nothing may have appeared or changed outside the data directory,
and inside it only the registry's own layout may exist. Requests are sent over a raw socket so
that paths reach the server byte for byte (no client normalises ``..`` or re-encodes ``%2F``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moorage.storage.base import Writer
from tests.support.app import (
    Client,
    RegistryEnv,
    Snapshot,
    assert_image_intact,
    catalog,
    patch_chunk,
    push_manifest,
    push_seeded,
    snapshot,
    start_upload,
    stream,
    tags,
    with_query,
)
from tests.support.http import Reply, raw_exchange, raw_request
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Image,
    digest_of,
    dumps,
    layer_blob,
    manifest_descriptor,
)
from tests.support.waiting import wait_until_async

SENTINEL = b"SENTINEL: this file is outside the registry's data directory\n"
STORAGE_KEY_RE = re.compile(
    r"^(blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}"
    r"|blobs/sha512/[0-9a-f]{2}/[0-9a-f]{128}"
    r"|uploads/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


@dataclass
class Seeded:
    """A registry with known content, and everything needed to prove it was not damaged."""

    env: RegistryEnv
    #: ``seeded_image("known")`` in stable/app as v1 and latest.
    image: Image
    #: ``seeded_image("other", layers=1)`` in stable/other as v1, pushed in chunks.
    other: Image
    repositories: list[str] = field(default_factory=list)
    tag_lists: dict[str, list[str]] = field(default_factory=dict)
    outside: Snapshot = field(default_factory=dict)
    watched: Path = Path()

    @property
    def client(self) -> Client:
        return self.env.client

    def outside_snapshot(self) -> Snapshot:
        return snapshot(self.watched, self.env.data, self.watched / "scratch")

    async def record(self) -> None:
        self.repositories = await catalog(self.client)
        self.tag_lists = {name: await tags(self.client, name) for name in self.repositories}
        self.outside = self.outside_snapshot()

    async def check(self) -> None:
        """Everything pushed before is intact, and nothing else appeared anywhere."""
        await assert_image_intact(self.client, "stable/app", self.image, ["v1", "latest"])
        await assert_image_intact(self.client, "stable/other", self.other, ["v1"])
        assert await catalog(self.client) == self.repositories
        for name, expected in self.tag_lists.items():
            assert await tags(self.client, name) == expected
        assert self.outside_snapshot() == self.outside
        for path in self.watched.rglob("*"):
            if (
                path.is_file()
                and self.env.data not in path.parents
                and path.name in ("passwd", "secret")
            ):
                assert path.read_bytes() == SENTINEL
        if self.env.driver == "filesystem":
            self.check_layout()

    def check_layout(self) -> None:
        data = self.env.data
        allowed_top = {
            "storage",
            "moorage.db",
            "moorage.db-wal",
            "moorage.db-shm",
            "moorage.db.lock",
            "moorage.db.policy",
        }
        assert {p.name for p in data.iterdir()} <= allowed_top
        storage = data / "storage"
        for path in storage.rglob("*"):
            if path.is_file():
                key = path.relative_to(storage).as_posix()
                assert STORAGE_KEY_RE.fullmatch(key), f"unexpected object in storage: {key}"


@pytest.fixture
async def seeded(env: RegistryEnv, tmp_path: Path) -> Seeded:
    image = await push_seeded(env.client, "stable/app", "v1", "known", layers=2)
    await push_manifest(env.client, "stable/app", "latest", image.manifest)
    other = await push_seeded(env.client, "stable/other", "v1", "other", layers=1, chunked=True)
    # Files a path traversal would reach, next to and above the data directory.
    for place in (env.data.parent, env.data.parent.parent, env.root, tmp_path):
        (place / "etc").mkdir(exist_ok=True)
        (place / "etc" / "passwd").write_bytes(SENTINEL)
        (place / "secret").write_bytes(SENTINEL)
    seeded = Seeded(env, image, other, watched=tmp_path)
    await seeded.record()
    return seeded


def assert_no_sentinel(response: Reply) -> None:
    assert b"SENTINEL" not in response.body


# -- the table of single bad requests ---------------------------------------------------------

Body = bytes | Callable[[Seeded], bytes]


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    #: Sent as is; {config}, {layer}, {manifest}, {config_hex}, {manifest_hex} are replaced.
    path: str
    #: Acceptable (status, code) pairs; code None means the body need not be an OCI error.
    expect: tuple[tuple[int, str | None], ...]
    body: Body = b""
    headers: tuple[tuple[str, str], ...] = ()


def one(status: int, code: str | None) -> tuple[tuple[int, str | None], ...]:
    return ((status, code),)


NAME_INVALID = one(400, "NAME_INVALID")
DIGEST_INVALID = one(400, "DIGEST_INVALID")
MANIFEST_INVALID = one(400, "MANIFEST_INVALID")
UPLOAD_UNKNOWN = one(404, "BLOB_UPLOAD_UNKNOWN")
PAGINATION = one(400, "PAGINATION_NUMBER_INVALID")
MANIFEST_UNKNOWN = one(404, "MANIFEST_UNKNOWN")
#: A Content-Range that disagrees with the body: 416 (range) or 400 SIZE_INVALID both fit.
RANGE_MISMATCH = ((416, "BLOB_UPLOAD_INVALID"), (400, "SIZE_INVALID"))

HEX = "0123456789abcdef" * 4
LONG_NAME = "a" * 256
LONG_PATH_NAME = "/".join(["component"] * 30)  # 299 characters
OCI = (("Content-Type", OCI_MANIFEST),)


def known_manifest(seeded: Seeded) -> bytes:
    return seeded.image.manifest


def manifest_body(**changes: Any) -> Callable[[Seeded], bytes]:
    """The known image's manifest with fields replaced (a value of ... deletes the field)."""

    def build(seeded: Seeded) -> bytes:
        body = json.loads(seeded.image.manifest)
        for key, value in changes.items():
            if value is ...:
                body.pop(key, None)
            else:
                body[key] = value(seeded) if callable(value) else value
        return json.dumps(body).encode()

    return build


def config_with(**changes: Any) -> Callable[[Seeded], dict[str, Any]]:
    def build(seeded: Seeded) -> dict[str, Any]:
        descriptor = seeded.image.config.descriptor()
        for key, value in changes.items():
            if value is ...:
                descriptor.pop(key, None)
            else:
                descriptor[key] = value
        return descriptor

    return build


def layers_with(**changes: Any) -> Callable[[Seeded], list[dict[str, Any]]]:
    def build(seeded: Seeded) -> list[dict[str, Any]]:
        layers = [layer.descriptor() for layer in seeded.image.layers]
        layers[0].update(changes)
        return layers

    return build


def index_body(manifests: Any) -> Callable[[Seeded], bytes]:
    def build(seeded: Seeded) -> bytes:
        return dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})

    return build


def nested(depth: int) -> bytes:
    return b'{"schemaVersion": 2, "config": ' + b"[" * depth + b"]" * depth + b"}"


def huge_integer(seeded: Seeded) -> bytes:
    text = manifest_body(config=config_with(size=0))(seeded)
    return text.replace(b'"size": 0', b'"size": ' + b"9" * 5000, 1)


def over_limit(seeded: Seeded) -> bytes:
    body = json.loads(seeded.image.manifest)
    body["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    return json.dumps(body).encode()


BAD_NAMES = [
    Bad("uppercase", "GET", "/v2/Stable/App/tags/list", NAME_INVALID),
    Bad("uppercase-manifest", "GET", "/v2/STABLE/app/manifests/v1", NAME_INVALID),
    Bad("uppercase-push", "POST", "/v2/Upper/blobs/uploads/", NAME_INVALID),
    Bad("uppercase-put", "PUT", "/v2/Stable/app/manifests/v1", NAME_INVALID, known_manifest, OCI),
    Bad("empty-component", "GET", "/v2/stable//app/tags/list", NAME_INVALID),
    Bad("leading-slash", "GET", "/v2//stable/app/tags/list", NAME_INVALID),
    Bad("trailing-slash", "GET", "/v2/stable/app//tags/list", NAME_INVALID),
    Bad("dotdot", "GET", "/v2/stable/../stable/app/tags/list", NAME_INVALID),
    Bad("dot", "GET", "/v2/stable/./app/tags/list", NAME_INVALID),
    Bad(
        "dotdot-put",
        "PUT",
        "/v2/stable/../stable/app/manifests/v1",
        NAME_INVALID,
        known_manifest,
        OCI,
    ),
    Bad("dotdot-post", "POST", "/v2/../../etc/blobs/uploads/", NAME_INVALID),
    Bad("encoded-slash-dotdot", "GET", "/v2/a%2F..%2Fb/tags/list", NAME_INVALID),
    Bad("encoded-slash-dotdot-lower", "GET", "/v2/a%2f..%2fb/tags/list", NAME_INVALID),
    Bad(
        "encoded-traversal-post", "POST", "/v2/stable%2F..%2F..%2Fetc/blobs/uploads/", NAME_INVALID
    ),
    Bad(
        "encoded-traversal-put",
        "PUT",
        "/v2/stable%2F..%2Fstable%2Fapp/manifests/v1",
        NAME_INVALID,
        known_manifest,
        OCI,
    ),
    Bad("encoded-dots", "GET", "/v2/%2e%2e/%2e%2e/etc/tags/list", NAME_INVALID),
    Bad("encoded-dots-upper", "GET", "/v2/%2E%2E/stable/app/tags/list", NAME_INVALID),
    Bad("encoded-trailing-dotdot", "GET", "/v2/stable%2fapp%2f%2e%2e/tags/list", NAME_INVALID),
    Bad(
        "encoded-dotdot-blob",
        "GET",
        "/v2/stable/app%2F..%2F..%2Fetc/blobs/{config}",
        NAME_INVALID,
    ),
    Bad("backslash", "GET", "/v2/stable%5C..%5Capp/tags/list", NAME_INVALID),
    Bad("leading-separator", "GET", "/v2/-stable/app/tags/list", NAME_INVALID),
    Bad("trailing-separator", "GET", "/v2/stable/app-/tags/list", NAME_INVALID),
    Bad("double-dot-inside", "GET", "/v2/stable/a..b/tags/list", NAME_INVALID),
    Bad("triple-underscore", "GET", "/v2/stable/a___b/tags/list", NAME_INVALID),
    Bad("nul", "GET", "/v2/stable%00/app/tags/list", ((400, "NAME_INVALID"), (400, None))),
    Bad("non-ascii", "GET", "/v2/st%C3%A9ble/app/tags/list", NAME_INVALID),
    Bad("space", "GET", "/v2/stable%20app/tags/list", NAME_INVALID),
    Bad("colon", "GET", "/v2/stable:app/tags/list", NAME_INVALID),
    Bad("newline", "GET", "/v2/stable/app%0A/tags/list", ((400, "NAME_INVALID"), (404, None))),
    Bad("too-long", "GET", f"/v2/{LONG_NAME}/tags/list", NAME_INVALID),
    Bad("too-long-push", "POST", f"/v2/{LONG_NAME}/blobs/uploads/", NAME_INVALID),
    Bad("too-long-put", "PUT", f"/v2/{LONG_NAME}/manifests/v1", NAME_INVALID, known_manifest, OCI),
    Bad("too-long-components", "POST", f"/v2/{LONG_PATH_NAME}/blobs/uploads/", NAME_INVALID),
    Bad(
        "too-long-mount",
        "POST",
        f"/v2/{LONG_NAME}/blobs/uploads/?mount={{config}}&from=stable/app",
        NAME_INVALID,
    ),
    Bad(
        "mount-from-traversal",
        "POST",
        "/v2/stable/new/blobs/uploads/?mount={config}&from=..%2F..%2Fetc",
        NAME_INVALID,
    ),
    Bad(
        "mount-from-uppercase",
        "POST",
        "/v2/stable/new/blobs/uploads/?mount={config}&from=Stable/App",
        NAME_INVALID,
    ),
    Bad(
        "mount-from-too-long",
        "POST",
        f"/v2/stable/new/blobs/uploads/?mount={{config}}&from={LONG_NAME}",
        NAME_INVALID,
    ),
]

BAD_DIGESTS = [
    Bad("traversal", "GET", "/v2/stable/app/blobs/sha256:../../etc/passwd", DIGEST_INVALID),
    Bad(
        "encoded-traversal",
        "GET",
        "/v2/stable/app/blobs/sha256:..%2F..%2Fetc%2Fpasswd",
        DIGEST_INVALID,
    ),
    Bad("encoded-colon", "GET", "/v2/stable/app/blobs/sha256%3A..%2F..%2Fsecret", DIGEST_INVALID),
    Bad("dotdot", "GET", "/v2/stable/app/blobs/sha256:..", DIGEST_INVALID),
    Bad("dotdot-delete", "DELETE", "/v2/stable/app/blobs/sha256:..", DIGEST_INVALID),
    Bad("short", "GET", "/v2/stable/app/blobs/sha256:abc", DIGEST_INVALID),
    Bad("63-hex", "GET", "/v2/stable/app/blobs/sha256:{config_hex_short}", DIGEST_INVALID),
    Bad("65-hex", "GET", "/v2/stable/app/blobs/sha256:{config_hex}0", DIGEST_INVALID),
    Bad("uppercase-hex", "GET", "/v2/stable/app/blobs/sha256:{config_hex_upper}", DIGEST_INVALID),
    Bad(
        "uppercase-hex-delete",
        "DELETE",
        "/v2/stable/app/blobs/sha256:{config_hex_upper}",
        DIGEST_INVALID,
    ),
    Bad("uppercase-algorithm", "GET", "/v2/stable/app/blobs/SHA256:{config_hex}", DIGEST_INVALID),
    Bad("md5", "GET", f"/v2/stable/app/blobs/md5:{HEX[:32]}", DIGEST_INVALID),
    Bad("sha1", "GET", f"/v2/stable/app/blobs/sha1:{HEX[:40]}", DIGEST_INVALID),
    Bad("sha384", "GET", f"/v2/stable/app/blobs/sha384:{HEX[:96]}", DIGEST_INVALID),
    Bad("no-algorithm", "GET", "/v2/stable/app/blobs/{config_hex}", DIGEST_INVALID),
    Bad("empty-hex", "GET", "/v2/stable/app/blobs/sha256:", DIGEST_INVALID),
    Bad("nul", "GET", "/v2/stable/app/blobs/sha256:{config_hex}%00", DIGEST_INVALID),
    Bad("non-hex", "GET", f"/v2/stable/app/blobs/sha256:{'g' * 64}", DIGEST_INVALID),
    Bad("base64-chars", "GET", f"/v2/stable/app/blobs/sha256:{'A=_-' * 16}", DIGEST_INVALID),
    Bad(
        "manifest-uppercase",
        "GET",
        "/v2/stable/app/manifests/sha256:{manifest_hex_upper}",
        DIGEST_INVALID,
    ),
    Bad(
        "manifest-uppercase-delete",
        "DELETE",
        "/v2/stable/app/manifests/sha256:{manifest_hex_upper}",
        DIGEST_INVALID,
    ),
    Bad("manifest-short", "GET", "/v2/stable/app/manifests/sha256:abc", DIGEST_INVALID),
    Bad("manifest-md5", "GET", f"/v2/stable/app/manifests/md5:{HEX[:32]}", DIGEST_INVALID),
    Bad(
        "manifest-put-short",
        "PUT",
        "/v2/stable/app/manifests/sha256:abc",
        DIGEST_INVALID,
        known_manifest,
        OCI,
    ),
    Bad(
        "manifest-put-dotdot",
        "PUT",
        "/v2/stable/app/manifests/sha256:..",
        DIGEST_INVALID,
        known_manifest,
        OCI,
    ),
    Bad(
        "manifest-put-sha1",
        "PUT",
        f"/v2/stable/app/manifests/sha1:{HEX[:40]}",
        DIGEST_INVALID,
        known_manifest,
        OCI,
    ),
    Bad(
        "manifest-put-traversal",
        "PUT",
        "/v2/stable/app/manifests/sha256:..%2F..%2Fsecret",
        DIGEST_INVALID,
        known_manifest,
        OCI,
    ),
    Bad(
        "post-traversal",
        "POST",
        "/v2/stable/app/blobs/uploads/?digest=sha256:../../x",
        DIGEST_INVALID,
        b"x",
    ),
    Bad(
        "post-encoded-traversal",
        "POST",
        "/v2/stable/app/blobs/uploads/?digest=sha256:..%2F..%2Fetc%2Fpasswd",
        DIGEST_INVALID,
        b"x",
    ),
    Bad(
        "post-uppercase",
        "POST",
        f"/v2/stable/app/blobs/uploads/?digest=sha256:{digest_of(b'x')[7:].upper()}",
        DIGEST_INVALID,
        b"x",
    ),
    Bad(
        "post-sha1",
        "POST",
        "/v2/stable/app/blobs/uploads/?digest=sha1:11f6ad8ec52a2984abaafd7c3b516503785c2072",
        DIGEST_INVALID,
        b"x",
    ),
    Bad("post-empty", "POST", "/v2/stable/app/blobs/uploads/?digest=", DIGEST_INVALID, b"x"),
    Bad(
        "mount-traversal",
        "POST",
        "/v2/stable/app/blobs/uploads/?mount=sha256:../../etc/passwd&from=stable/other",
        DIGEST_INVALID,
    ),
    Bad(
        "mount-uppercase",
        "POST",
        "/v2/stable/new/blobs/uploads/?mount=sha256:{config_hex_upper}&from=stable/app",
        DIGEST_INVALID,
    ),
    Bad("referrers-dotdot", "GET", "/v2/stable/app/referrers/sha256:..", DIGEST_INVALID),
    Bad("referrers-traversal", "GET", "/v2/stable/app/referrers/sha256:../../x", DIGEST_INVALID),
]

BAD_UPLOAD_IDS = [
    Bad("encoded-traversal", "GET", "/v2/stable/app/blobs/uploads/..%2F..%2Fx", UPLOAD_UNKNOWN),
    Bad("traversal", "PATCH", "/v2/stable/app/blobs/uploads/../../x", UPLOAD_UNKNOWN, b"data"),
    Bad("dotdot-get", "GET", "/v2/stable/app/blobs/uploads/..", UPLOAD_UNKNOWN),
    Bad("dotdot-patch", "PATCH", "/v2/stable/app/blobs/uploads/..", UPLOAD_UNKNOWN, b"data"),
    Bad("dotdot-encoded", "PATCH", "/v2/stable/app/blobs/uploads/%2e%2e", UPLOAD_UNKNOWN, b"data"),
    Bad(
        "dotdot-put",
        "PUT",
        "/v2/stable/app/blobs/uploads/..?digest={config}",
        UPLOAD_UNKNOWN,
        b"data",
    ),
    Bad("dotdot-delete", "DELETE", "/v2/stable/app/blobs/uploads/..", UPLOAD_UNKNOWN),
    Bad("random-get", "GET", "/v2/stable/app/blobs/uploads/abc", UPLOAD_UNKNOWN),
    Bad("random-patch", "PATCH", "/v2/stable/app/blobs/uploads/xyz", UPLOAD_UNKNOWN, b"data"),
    Bad("random-delete", "DELETE", "/v2/stable/app/blobs/uploads/abc", UPLOAD_UNKNOWN),
    Bad("uuid-get", "GET", f"/v2/stable/app/blobs/uploads/{uuid.uuid4()}", UPLOAD_UNKNOWN),
    Bad(
        "uuid-patch",
        "PATCH",
        f"/v2/stable/app/blobs/uploads/{uuid.uuid4()}",
        UPLOAD_UNKNOWN,
        b"data",
        (("Content-Range", "0-3"),),
    ),
    Bad(
        "uuid-put",
        "PUT",
        f"/v2/stable/app/blobs/uploads/{uuid.uuid4()}?digest={digest_of(b'data')}",
        UPLOAD_UNKNOWN,
        b"data",
    ),
    Bad("uuid-delete", "DELETE", f"/v2/stable/app/blobs/uploads/{uuid.uuid4()}", UPLOAD_UNKNOWN),
    Bad(
        "uuid-uppercase",
        "GET",
        f"/v2/stable/app/blobs/uploads/{str(uuid.uuid4()).upper()}",
        UPLOAD_UNKNOWN,
    ),
    Bad("nul", "GET", f"/v2/stable/app/blobs/uploads/{uuid.uuid4()}%00", UPLOAD_UNKNOWN),
    Bad("unicode", "PATCH", "/v2/stable/app/blobs/uploads/%C3%A9", UPLOAD_UNKNOWN, b"data"),
    Bad("long", "GET", f"/v2/stable/app/blobs/uploads/{'a' * 5000}", UPLOAD_UNKNOWN),
]

BAD_MANIFESTS = [
    Bad("not-json", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b"not json", OCI),
    Bad("empty", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b"", OCI),
    Bad("array", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b"[]", OCI),
    Bad("string", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b'"manifest"', OCI),
    Bad("number", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b"2", OCI),
    Bad("null", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b"null", OCI),
    Bad("empty-object", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b"{}", OCI),
    Bad("bad-utf8", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b'{"\xff": 1}', OCI),
    Bad("truncated", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, b'{"schema', OCI),
    Bad(
        "missing-config",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=...),
        OCI,
    ),
    Bad(
        "config-null",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=None),
        OCI,
    ),
    Bad(
        "config-string",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config="sha256:abc"),
        OCI,
    ),
    Bad(
        "config-bad-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(digest="sha256:xyz")),
        OCI,
    ),
    Bad(
        "config-traversal-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(digest="sha256:../../etc/passwd")),
        OCI,
    ),
    Bad(
        "config-digest-without-algorithm",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(digest=HEX)),
        OCI,
    ),
    Bad(
        "config-digest-newline",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(
            config=lambda s: {**s.image.config.descriptor(), "digest": s.image.config.digest + "\n"}
        ),
        OCI,
    ),
    Bad(
        "config-no-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(digest=...)),
        OCI,
    ),
    Bad(
        "config-negative-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(size=-1)),
        OCI,
    ),
    Bad(
        "config-string-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(size="12")),
        OCI,
    ),
    Bad(
        "config-float-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(size=1.5)),
        OCI,
    ),
    Bad(
        "config-bool-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(size=True)),
        OCI,
    ),
    Bad(
        "config-no-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(size=...)),
        OCI,
    ),
    Bad(
        "config-no-media-type",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(mediaType=...)),
        OCI,
    ),
    Bad(
        "config-media-type-garbage",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(mediaType="not a media type")),
        OCI,
    ),
    Bad(
        "config-media-type-newline",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(config=config_with(mediaType="application/vnd.oci.image.config.v1+json\n")),
        OCI,
    ),
    Bad(
        "layers-object",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(layers={}),
        OCI,
    ),
    Bad(
        "layers-of-strings",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(layers=["sha256:abc"]),
        OCI,
    ),
    Bad(
        "layer-uppercase-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(layers=lambda s: layers_with(digest=s.image.layers[0].digest.upper())(s)),
        OCI,
    ),
    Bad(
        "layer-md5-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(layers=layers_with(digest=f"md5:{HEX[:32]}")),
        OCI,
    ),
    Bad(
        "layer-negative-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(layers=layers_with(size=-5)),
        OCI,
    ),
    Bad(
        "layer-nan-size",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        lambda s: manifest_body(layers=layers_with(size=0))(s).replace(
            b'"size": 0', b'"size": NaN', 1
        ),
        OCI,
    ),
    Bad(
        "layer-unknown",
        "PUT",
        "/v2/stable/app/manifests/v1",
        one(400, "MANIFEST_BLOB_UNKNOWN"),
        manifest_body(layers=layers_with(digest=digest_of(b"never pushed"))),
        OCI,
    ),
    Bad(
        "new-repository-missing-blobs",
        "PUT",
        "/v2/brand/new/manifests/v1",
        one(400, "MANIFEST_BLOB_UNKNOWN"),
        known_manifest,
        OCI,
    ),
    Bad(
        "new-repository-invalid",
        "PUT",
        "/v2/brand/new/manifests/v1",
        MANIFEST_INVALID,
        b"[]",
        OCI,
    ),
    Bad(
        "layer-of-other-repository",
        "PUT",
        "/v2/stable/app/manifests/v1",
        one(400, "MANIFEST_BLOB_UNKNOWN"),
        manifest_body(layers=lambda s: [s.other.layers[0].descriptor()]),
        OCI,
    ),
    Bad(
        "schema-version-1",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(schemaVersion=1),
        OCI,
    ),
    Bad(
        "schema-version-3",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(schemaVersion=3),
        OCI,
    ),
    Bad(
        "schema-version-string",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(schemaVersion="2"),
        OCI,
    ),
    Bad(
        "schema-version-missing",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(schemaVersion=...),
        OCI,
    ),
    Bad(
        "schema1-content-type",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        known_manifest,
        (("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws"),),
    ),
    Bad(
        "docker-content-type-oci-body",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        known_manifest,
        (("Content-Type", "application/vnd.docker.distribution.manifest.v2+json"),),
    ),
    Bad(
        "index-content-type-manifest-body",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        known_manifest,
        (("Content-Type", OCI_INDEX),),
    ),
    Bad(
        "text-content-type",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(mediaType=...),
        (("Content-Type", "text/plain"),),
    ),
    Bad(
        "unknown-media-type",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(mediaType="application/vnd.example.manifest+json"),
        (("Content-Type", "application/vnd.example.manifest+json"),),
    ),
    Bad(
        "media-type-number",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(mediaType=2),
        OCI,
    ),
    Bad(
        "index-manifests-object",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        index_body({}),
        (("Content-Type", OCI_INDEX),),
    ),
    Bad(
        "index-child-bad-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        index_body([{"mediaType": OCI_MANIFEST, "digest": "sha256:../x", "size": 1}]),
        (("Content-Type", OCI_INDEX),),
    ),
    Bad(
        "index-child-unknown",
        "PUT",
        "/v2/stable/app/manifests/v1",
        one(400, "MANIFEST_BLOB_UNKNOWN"),
        index_body([manifest_descriptor(b'{"unknown": true}')]),
        (("Content-Type", OCI_INDEX),),
    ),
    Bad(
        "index-without-manifests",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        lambda s: dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}),
        (("Content-Type", OCI_INDEX),),
    ),
    Bad(
        "subject-bad-digest",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(subject={"mediaType": OCI_MANIFEST, "digest": "sha256:zz", "size": 2}),
        OCI,
    ),
    Bad(
        "subject-digest-newline",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(
            subject=lambda s: {
                **manifest_descriptor(s.other.manifest),
                "digest": s.other.digest + "\n",
            }
        ),
        OCI,
    ),
    Bad(
        "annotations-not-strings",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(annotations={"a": 1}),
        OCI,
    ),
    Bad(
        "artifact-type-garbage",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        manifest_body(artifactType="not a media type"),
        OCI,
    ),
    Bad(
        "deeply-nested",
        "PUT",
        "/v2/stable/app/manifests/v1",
        MANIFEST_INVALID,
        nested(100_000),
        OCI,
    ),
    Bad("huge-integer", "PUT", "/v2/stable/app/manifests/v1", MANIFEST_INVALID, huge_integer, OCI),
    Bad(
        "over-4-mib",
        "PUT",
        "/v2/stable/app/manifests/v1",
        ((413, "MANIFEST_INVALID"), (413, None)),
        over_limit,
        OCI,
    ),
    Bad(
        "declared-over-4-mib",
        "PUT",
        "/v2/stable/app/manifests/v1",
        ((413, "MANIFEST_INVALID"), (413, None)),
        b"",
        (("Content-Type", OCI_MANIFEST), ("Content-Length", str(4 * 1024 * 1024 + 1))),
    ),
    Bad(
        "digest-of-other-body",
        "PUT",
        "/v2/stable/app/manifests/{manifest}",
        DIGEST_INVALID,
        manifest_body(annotations={"changed": "yes"}),
        OCI,
    ),
    Bad(
        "tag-leading-dash",
        "PUT",
        "/v2/stable/app/manifests/-v1",
        MANIFEST_INVALID,
        known_manifest,
        OCI,
    ),
    Bad("tag-dotdot", "PUT", "/v2/stable/app/manifests/..", MANIFEST_INVALID, known_manifest, OCI),
    Bad(
        "tag-too-long",
        "PUT",
        f"/v2/stable/app/manifests/{'t' * 129}",
        MANIFEST_INVALID,
        known_manifest,
        OCI,
    ),
    Bad(
        "tag-nul",
        "PUT",
        "/v2/stable/app/manifests/v1%00",
        ((400, "MANIFEST_INVALID"), (400, None)),
        known_manifest,
        OCI,
    ),
    Bad(
        "tag-encoded-slash",
        "PUT",
        "/v2/stable/app/manifests/v1%2F..%2F..%2Fx",
        MANIFEST_INVALID,
        known_manifest,
        OCI,
    ),
]

BAD_SIZES = [
    Bad(
        "content-length-not-a-number",
        "POST",
        f"/v2/stable/app/blobs/uploads/?digest={digest_of(b'data')}",
        one(400, None),
        b"data",
        (("Content-Length", "abc"),),
    ),
    Bad(
        "content-length-negative",
        "POST",
        f"/v2/stable/app/blobs/uploads/?digest={digest_of(b'data')}",
        one(400, None),
        b"data",
        (("Content-Length", "-4"),),
    ),
    Bad(
        "content-length-short-of-body-claims-known-digest",
        "POST",
        "/v2/stable/app/blobs/uploads/?digest={config}",
        DIGEST_INVALID,
        lambda s: s.image.config.data[:-1],
    ),
    Bad(
        "wrong-digest-claims-known-blob",
        "POST",
        "/v2/stable/app/blobs/uploads/?digest={layer}",
        DIGEST_INVALID,
        b"evil bytes pretending to be the known layer",
    ),
    Bad(
        "wrong-digest-claims-known-manifest",
        "PUT",
        "/v2/stable/app/manifests/{manifest}",
        DIGEST_INVALID,
        b'{"schemaVersion": 2}',
        OCI,
    ),
]

BAD_PAGINATION = [
    Bad(f"{where}-{label}", "GET", f"{path}?n={value}", PAGINATION)
    for where, path in (("tags", "/v2/stable/app/tags/list"), ("catalog", "/v2/_catalog"))
    for label, value in (
        ("negative", "-1"),
        ("non-numeric", "abc"),
        ("float", "1.5"),
        ("exponent", "1e3"),
        ("hex", "0x10"),
        ("space", "%201"),
        ("plus", "%2B1"),
        ("too-large", "99999999999999999999"),
        ("superscript-two", "%C2%B2"),
    )
]

#: Every endpoint and method with a reference holding "/" (raw or "%2f") or "..": the answer
#: is the error of the resource the path names, never "no such endpoint".
SLASHED_REFERENCES = ("sha256:{config_hex}/x", "sha256:{config_hex}%2fx", "../../x", "..%2F..%2Fx")
RESOURCE_ERRORS: list[tuple[str, str, tuple[tuple[int, str | None], ...]]] = [
    ("GET", "blobs/{ref}", DIGEST_INVALID),
    ("HEAD", "blobs/{ref}", one(400, None)),
    ("DELETE", "blobs/{ref}", DIGEST_INVALID),
    ("GET", "blobs/uploads/{ref}", UPLOAD_UNKNOWN),
    ("PATCH", "blobs/uploads/{ref}", UPLOAD_UNKNOWN),
    ("PUT", "blobs/uploads/{ref}?digest={config}", UPLOAD_UNKNOWN),
    ("DELETE", "blobs/uploads/{ref}", UPLOAD_UNKNOWN),
    ("GET", "manifests/{ref}", ((400, "DIGEST_INVALID"), (404, "MANIFEST_UNKNOWN"))),
    ("HEAD", "manifests/{ref}", ((400, None), (404, None))),
    ("PUT", "manifests/{ref}", ((400, "DIGEST_INVALID"), (400, "MANIFEST_INVALID"))),
    ("DELETE", "manifests/{ref}", ((400, "DIGEST_INVALID"), (404, "MANIFEST_UNKNOWN"))),
    ("GET", "referrers/{ref}", DIGEST_INVALID),
]
SLASHED = [
    Bad(
        f"slashed-{method.lower()}-{path.split('/')[0]}{'-upload' if 'uploads' in path else ''}"
        f"-{index}",
        method,
        "/v2/stable/app/" + path.replace("{ref}", reference),
        expect,
        known_manifest if path.startswith("manifests") and method == "PUT" else b"",
        OCI if path.startswith("manifests") and method == "PUT" else (),
    )
    for method, path, expect in RESOURCE_ERRORS
    for index, reference in enumerate(SLASHED_REFERENCES)
]


CASES = [
    *(pytest.param(case, id=f"name-{case.id}") for case in BAD_NAMES),
    *(pytest.param(case, id=f"digest-{case.id}") for case in BAD_DIGESTS),
    *(pytest.param(case, id=f"upload-{case.id}") for case in BAD_UPLOAD_IDS),
    *(pytest.param(case, id=f"manifest-{case.id}") for case in BAD_MANIFESTS),
    *(pytest.param(case, id=f"size-{case.id}") for case in BAD_SIZES),
    *(pytest.param(case, id=f"pagination-{case.id}") for case in BAD_PAGINATION),
    *(pytest.param(case, id=case.id) for case in SLASHED),
]


def fill(template: str, seeded: Seeded) -> str:
    image = seeded.image
    values = {
        "config": image.config.digest,
        "layer": image.layers[0].digest,
        "manifest": image.digest,
        "config_hex": image.config.digest[7:],
        "config_hex_short": image.config.digest[7:-1],
        "config_hex_upper": image.config.digest[7:].upper(),
        "manifest_hex_upper": image.digest[7:].upper(),
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def assert_expected(response: Reply, expect: tuple[tuple[int, str | None], ...]) -> None:
    got_code: str | None = None
    try:
        got_code = response.code
    except (ValueError, KeyError, IndexError, TypeError):
        got_code = None
    for status, code in expect:
        if response.status == status and (code is None or code == got_code):
            if code is not None:
                assert response.headers.get("Docker-Distribution-API-Version") == "registry/2.0"
            return
    pytest.fail(
        f"expected one of {expect}, got {response.status} {got_code}: {response.body[:300]!r}"
    )


@pytest.mark.parametrize("case", CASES)
async def test_bad_request(seeded: Seeded, case: Bad) -> None:
    body = case.body(seeded) if callable(case.body) else case.body
    problems: list[str] = []
    try:
        response = await raw_request(
            seeded.client,
            case.method,
            fill(case.path, seeded),
            headers=dict(case.headers),
            body=body,
        )
        assert_expected(response, case.expect)
        assert_no_sentinel(response)
    except (AssertionError, pytest.fail.Exception) as exc:
        problems.append(f"wrong answer: {exc}")
    # Whatever the answer, the stored data must be intact: check it either way.
    try:
        await seeded.check()
    except AssertionError as exc:
        problems.append(f"stored data changed: {str(exc)[:800]}")
    if problems:
        pytest.fail("\n".join(problems))


# -- bad requests that need a live upload session ---------------------------------------------


async def session_offset(client: Client, location: str) -> int:
    resp = await client.get(location)
    assert resp.status == 204, await resp.text()
    end = int(resp.headers["Range"].split("-")[1])
    return 0 if end == 0 else end + 1


async def finish_upload(client: Client, location: str, data: bytes, offset: int) -> None:
    """Prove a session still works: send the rest of ``data`` and complete it."""
    if offset < len(data):
        resp = await patch_chunk(client, location, data[offset:], offset)
        assert resp.status == 202, await resp.text()
    resp = await client.put(with_query(location, digest=digest_of(data)))
    assert resp.status == 201, await resp.text()
    resp = await client.get(f"/v2/{location.split('/blobs/')[0][4:]}/blobs/{digest_of(data)}")
    assert resp.status == 200
    assert await resp.read() == data


DATA = layer_blob("session", 8000).data


@pytest.fixture
async def session(seeded: Seeded) -> str:
    location = await start_upload(seeded.client, "stable/app")
    resp = await patch_chunk(seeded.client, location, DATA[:1000], 0)
    assert resp.status == 202
    return location


async def test_upload_id_of_another_repository(seeded: Seeded, session: str) -> None:
    client = seeded.client
    upload_id = session.rsplit("/", 1)[1]
    foreign = f"/v2/stable/other/blobs/uploads/{upload_id}"
    for method, extra in (
        ("GET", {}),
        ("PATCH", {"data": DATA[1000:2000], "headers": {"Content-Range": "1000-1999"}}),
        ("PUT", {"data": DATA[1000:]}),
        ("DELETE", {}),
    ):
        url = with_query(foreign, digest=digest_of(DATA)) if method == "PUT" else foreign
        resp = await client.request(method, url, **extra)
        assert resp.status == 404, await resp.text()
        assert (await resp.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    # Same id through a traversal-looking or differently spelt repository name.
    for path in (
        f"/v2/stable/other/../app/blobs/uploads/{upload_id}",
        f"/v2/stable%2Fother%2F..%2Fapp/blobs/uploads/{upload_id}",
        f"/v2/Stable/App/blobs/uploads/{upload_id}",
    ):
        response = await raw_request(client, "DELETE", path)
        assert_expected(response, NAME_INVALID)
    assert await session_offset(client, session) == 1000
    await seeded.check()
    await finish_upload(client, session, DATA, 1000)


async def test_traversal_digest_on_session_put(seeded: Seeded, session: str) -> None:
    for digest in ("sha256:../../etc/passwd", "sha256:..%2F..%2Fsecret", "sha256:" + "A" * 64):
        response = await raw_request(
            seeded.client, "PUT", f"{session}?digest={digest}", body=DATA[1000:]
        )
        assert_expected(response, DIGEST_INVALID)
    await seeded.check()
    assert await session_offset(seeded.client, session) == 1000
    await finish_upload(seeded.client, session, DATA, 1000)


async def test_session_put_claiming_a_known_digest(seeded: Seeded, session: str) -> None:
    known = seeded.image.layers[0]
    resp = await seeded.client.put(with_query(session, digest=known.digest), data=DATA[1000:])
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    await seeded.check()


async def test_chunks_of_the_right_size_but_wrong_bytes(seeded: Seeded) -> None:
    known = seeded.image.layers[1]
    location = await start_upload(seeded.client, "stable/app")
    fake = bytes(b ^ 0xFF for b in known.data)
    half = known.size // 2
    await patch_chunk(seeded.client, location, fake[:half], 0)
    await patch_chunk(seeded.client, location, fake[half:], half)
    resp = await seeded.client.put(with_query(location, digest=known.digest))
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    await seeded.check()


@pytest.mark.parametrize(
    ("content_range", "length"),
    [("1000-1999", 500), ("1000-1499", 1000), ("1000-99999999999999999999", 5)],
)
async def test_patch_content_length_disagrees_with_content_range(
    seeded: Seeded, session: str, content_range: str, length: int
) -> None:
    response = await raw_request(
        seeded.client,
        "PATCH",
        session,
        headers={"Content-Range": content_range, "Content-Length": str(length)},
        body=DATA[1000 : 1000 + length],
    )
    assert_expected(response, RANGE_MISMATCH)
    assert await session_offset(seeded.client, session) == 1000
    await seeded.check()
    await finish_upload(seeded.client, session, DATA, 1000)


@pytest.mark.parametrize("content_range", ["bytes=1000-abc", "1999-1000", "abc", "-1-5", "1000-"])
async def test_patch_malformed_content_range(
    seeded: Seeded, session: str, content_range: str
) -> None:
    response = await raw_request(
        seeded.client,
        "PATCH",
        session,
        headers={"Content-Range": content_range},
        body=DATA[1000:2000],
    )
    assert_expected(response, ((416, "BLOB_UPLOAD_INVALID"), (400, "BLOB_UPLOAD_INVALID")))
    assert await session_offset(seeded.client, session) == 1000
    await finish_upload(seeded.client, session, DATA, 1000)


async def test_put_content_length_disagrees_with_content_range(
    seeded: Seeded, session: str
) -> None:
    """The final chunk claims 1000 bytes in Content-Range but carries 500.

    The digest given is that of what was really sent, so only the size check can catch it.
    """
    sent = DATA[:1000] + DATA[1000:1500]
    response = await raw_request(
        seeded.client,
        "PUT",
        f"{session}?digest={digest_of(sent)}",
        headers={"Content-Range": "1000-1999", "Content-Length": "500"},
        body=DATA[1000:1500],
    )
    assert_expected(response, RANGE_MISMATCH)
    resp = await seeded.client.get(f"/v2/stable/app/blobs/{digest_of(sent)}")
    assert resp.status == 404
    await seeded.check()


async def test_streamed_patch_longer_than_its_content_range(seeded: Seeded, session: str) -> None:
    resp = await seeded.client.patch(
        session, data=stream(DATA[1000:3000], 250), headers={"Content-Range": "1000-1999"}
    )
    assert resp.status in (400, 416), await resp.text()
    assert (await resp.json())["errors"][0]["code"] in ("SIZE_INVALID", "BLOB_UPLOAD_INVALID")
    assert await session_offset(seeded.client, session) == 1000
    await seeded.check()
    await finish_upload(seeded.client, session, DATA, 1000)


async def test_put_after_failed_digest_does_not_leave_the_blob(seeded: Seeded) -> None:
    client = seeded.client
    location = await start_upload(client, "stable/app")
    resp = await client.put(with_query(location, digest=digest_of(b"claimed")), data=b"actual")
    assert resp.status == 400
    for digest in (digest_of(b"claimed"), digest_of(b"actual")):
        resp = await client.get(f"/v2/stable/app/blobs/{digest}")
        assert resp.status == 404
    await seeded.check()


async def leased(seeded: Seeded, location: str) -> bool:
    """Whether a request holds the upload's lease (it is writing into the upload)."""
    upload_id = location.rsplit("/", 1)[1]
    upload = await seeded.env.registry.meta.get_upload(upload_id, "stable/app")
    return upload is not None and upload.lease_until > 0


async def wait_released(seeded: Seeded, location: str) -> None:
    """Wait until no request holds the upload (a failed request releases it)."""

    async def released() -> bool:
        return not await leased(seeded, location)

    await wait_until_async(released, "the failed request to release the upload's lease")


async def send_short_body(client: Client, head: str, body: bytes) -> bytes:
    """Declare more bytes than are sent, then close our side of the connection."""
    return await raw_exchange(client, head.encode() + body, half_close=True)


async def test_short_body_on_single_post(seeded: Seeded) -> None:
    blob = Blob(layer_blob("short", 5000).data)
    head = (
        f"POST /v2/stable/app/blobs/uploads/?digest={blob.digest} HTTP/1.1\r\n"
        f"Host: registry.test\r\nContent-Length: {blob.size}\r\n\r\n"
    )
    reply = await send_short_body(seeded.client, head, blob.data[:1000])
    assert not reply.startswith(b"HTTP/1.1 201"), reply[:200]
    await seeded.env.requests_done()
    resp = await seeded.client.get(f"/v2/stable/app/blobs/{blob.digest}")
    assert resp.status == 404
    await seeded.check()


async def test_short_body_claiming_a_known_digest(seeded: Seeded) -> None:
    known = seeded.image.layers[0]
    head = (
        f"POST /v2/stable/app/blobs/uploads/?digest={known.digest} HTTP/1.1\r\n"
        f"Host: registry.test\r\nContent-Length: {known.size}\r\n\r\n"
    )
    await send_short_body(seeded.client, head, known.data[: known.size // 2])
    await seeded.env.requests_done()
    await seeded.check()


async def test_short_body_on_patch_keeps_the_session(seeded: Seeded, session: str) -> None:
    head = (
        f"PATCH {session} HTTP/1.1\r\nHost: registry.test\r\n"
        "Content-Range: 1000-1999\r\nContent-Length: 1000\r\n\r\n"
    )
    reply = await send_short_body(seeded.client, head, DATA[1000:1400])
    assert not reply.startswith(b"HTTP/1.1 202"), reply[:200]
    await seeded.env.requests_done()  # the abandoned request runs as far as it will
    await wait_released(seeded, session)
    assert await session_offset(seeded.client, session) == 1000
    await seeded.check()
    await finish_upload(seeded.client, session, DATA, 1000)


async def test_disconnect_in_the_middle_of_a_chunk_keeps_the_session(
    seeded: Seeded, session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client goes away once the registry is already writing the chunk."""
    storage = seeded.env.registry.storage
    writers: list[Writer] = []
    open_writer = storage.open_writer

    async def watched(key: str, offset: int = 0) -> Writer:
        writers.append(await open_writer(key, offset))
        return writers[-1]

    monkeypatch.setattr(storage, "open_writer", watched)
    host, port = seeded.client.server.host, seeded.client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"PATCH {session} HTTP/1.1\r\nHost: registry.test\r\n"
            "Content-Range: 1000-1999\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        + DATA[1000:1400]
    )
    await writer.drain()
    await wait_until_async(
        lambda: bool(writers) and writers[-1].size == 1400,
        "the registry to write the 400 bytes sent of the chunk",
    )
    assert await leased(seeded, session)
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
    del reader
    await seeded.env.requests_done()  # the abandoned request runs as far as it will
    await wait_released(seeded, session)
    assert await session_offset(seeded.client, session) == 1000
    await seeded.check()
    await finish_upload(seeded.client, session, DATA, 1000)


async def test_short_body_on_final_put(seeded: Seeded, session: str) -> None:
    head = (
        f"PUT {session}?digest={digest_of(DATA)} HTTP/1.1\r\nHost: registry.test\r\n"
        f"Content-Length: {len(DATA) - 1000}\r\n\r\n"
    )
    reply = await send_short_body(seeded.client, head, DATA[1000:3000])
    assert not reply.startswith(b"HTTP/1.1 201"), reply[:200]
    await seeded.env.requests_done()  # the abandoned request runs as far as it will
    await wait_released(seeded, session)
    resp = await seeded.client.get(f"/v2/stable/app/blobs/{digest_of(DATA)}")
    assert resp.status == 404
    assert await session_offset(seeded.client, session) == 1000
    await seeded.check()
    await finish_upload(seeded.client, session, DATA, 1000)


async def test_short_manifest_body(seeded: Seeded) -> None:
    manifest = seeded.image.manifest
    head = (
        "PUT /v2/stable/app/manifests/v1 HTTP/1.1\r\nHost: registry.test\r\n"
        f"Content-Type: {OCI_MANIFEST}\r\nContent-Length: {len(manifest) + 100}\r\n\r\n"
    )
    reply = await send_short_body(seeded.client, head, manifest)
    assert not reply.startswith(b"HTTP/1.1 201"), reply[:200]
    await seeded.env.requests_done()
    await seeded.check()


async def test_server_still_serves_after_a_burst_of_bad_requests(seeded: Seeded) -> None:
    """Bad requests on one connection after another must not wedge or crash anything."""
    cases = [case.values[0] for case in CASES][::7]
    for case in cases:
        assert isinstance(case, Bad)
        body = case.body(seeded) if callable(case.body) else case.body
        await raw_request(
            seeded.client,
            case.method,
            fill(case.path, seeded),
            headers=dict(case.headers),
            body=body,
        )
    await seeded.check()


async def test_blob_deleted_in_a_new_repository_name_variant(seeded: Seeded) -> None:
    """Deleting through a percent-encoded spelling of the name never reaches another repo."""
    config = seeded.image.config.digest
    for path in (
        f"/v2/stable/other/..%2Fapp/blobs/{config}",
        f"/v2/stable%2Fother%2F..%2Fapp/blobs/{config}",
        f"/v2/stable/other/%2e%2e/app/blobs/{config}",
    ):
        response = await raw_request(seeded.client, "DELETE", path)
        assert_expected(response, NAME_INVALID)
    for path in (
        f"/v2/stable/other/..%2Fapp/manifests/{seeded.image.digest}",
        "/v2/stable%2Fother%2F..%2Fapp/manifests/v1",
    ):
        response = await raw_request(seeded.client, "DELETE", path)
        assert_expected(response, NAME_INVALID)
    await seeded.check()


async def test_new_repository_names_that_look_like_traversal_create_nothing(
    seeded: Seeded,
) -> None:
    image = seeded.image
    for name in ("..%2Fescape", "x%2F..%2F..%2Fescape", "%2e%2e", "escape%2F%2e"):
        response = await raw_request(
            seeded.client,
            "POST",
            f"/v2/{name}/blobs/uploads/?mount={image.config.digest}&from=stable/app",
        )
        assert_expected(response, NAME_INVALID)
        response = await raw_request(
            seeded.client,
            "PUT",
            f"/v2/{name}/manifests/v1",
            headers={"Content-Type": OCI_MANIFEST},
            body=image.manifest,
        )
        assert_expected(response, NAME_INVALID)
    await seeded.check()


async def test_failed_pushes_to_a_new_repository_leave_no_repository(seeded: Seeded) -> None:
    client = seeded.client
    resp = await client.post(
        f"/v2/brand/new/blobs/uploads/?digest={digest_of(b'claimed')}", data=b"actual"
    )
    assert resp.status == 400
    location = await start_upload(client, "brand/new")
    await patch_chunk(client, location, b"partial", 0)
    resp = await client.delete(location)
    assert resp.status == 204
    location = await start_upload(client, "brand/new")
    resp = await client.put(with_query(location, digest=digest_of(b"other")), data=b"bytes")
    assert resp.status == 400
    resp = await client.post(
        f"/v2/brand/new/blobs/uploads/?mount={digest_of(b'unknown')}&from=stable/app", data=b""
    )
    assert resp.status == 202
    resp = await client.get("/v2/brand/new/tags/list")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    await seeded.check()


async def test_name_of_exactly_255_characters_is_accepted(seeded: Seeded) -> None:
    name = "/".join(["a" * 50] * 4 + ["b" * 51])
    assert len(name) == 255
    location = await start_upload(seeded.client, name)
    resp = await seeded.client.put(with_query(location, digest=digest_of(b"x")), data=b"x")
    assert resp.status == 201, await resp.text()
    resp = await seeded.client.get(f"/v2/{name}/tags/list")
    assert resp.status == 200


async def test_encoded_slash_in_a_valid_name_is_the_same_repository_or_refused(
    seeded: Seeded,
) -> None:
    """``stable%2Fapp`` may address ``stable/app`` or be refused, never make a new repository."""
    response = await raw_request(seeded.client, "GET", "/v2/stable%2Fapp/manifests/v1")
    if response.status == 200:
        assert response.body == seeded.image.manifest
    else:
        assert_expected(response, NAME_INVALID)
    response = await raw_request(
        seeded.client,
        "PUT",
        "/v2/stable%2Fapp/manifests/v1",
        headers={"Content-Type": OCI_MANIFEST},
        body=seeded.image.manifest,
    )
    assert response.status in (201, 400)
    await seeded.check()
