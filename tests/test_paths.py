"""moorage.api.v2.paths: splitting /v2/<name>/... into endpoint, name and reference."""

from __future__ import annotations

import pytest

from moorage.api.v2.paths import Route, parse_path


@pytest.mark.parametrize(
    ("tail", "route"),
    [
        ("a/manifests/latest", Route("manifest", "a", "latest")),
        ("a/b/c/manifests/sha256:ab", Route("manifest", "a/b/c", "sha256:ab")),
        ("a/blobs/sha256:ab", Route("blob", "a", "sha256:ab")),
        ("a/blobs/uploads/", Route("uploads", "a")),
        ("a/blobs/uploads", Route("uploads", "a")),
        ("a/blobs/uploads/123", Route("upload", "a", "123")),
        ("a/tags/list", Route("tags", "a")),
        ("a/referrers/sha256:ab", Route("referrers", "a", "sha256:ab")),
        # Names may contain the words the endpoints use.
        ("blobs/manifests/x", Route("manifest", "blobs", "x")),
        ("a/blobs/uploads/manifests/x", Route("manifest", "a/blobs/uploads", "x")),
        ("tags/list/tags/list", Route("tags", "tags/list")),
        # A reference containing "/" (or "%2f", decoded before routing) still names its
        # endpoint, so the handler answers with that resource's error.
        ("a/manifests/x/y", Route("manifest", "a", "x/y")),
        ("a/blobs/sha256:ab/cd", Route("blob", "a", "sha256:ab/cd")),
        ("a/b/blobs/../../etc", Route("blob", "a/b", "../../etc")),
        ("a/blobs/uploads/x/y", Route("upload", "a", "x/y")),
        ("a/blobs/uploads/../../x", Route("upload", "a", "../../x")),
        ("a/referrers/sha256:ab/cd", Route("referrers", "a", "sha256:ab/cd")),
    ],
)
def test_parse(tail: str, route: Route) -> None:
    assert parse_path(tail) == route


@pytest.mark.parametrize(
    "tail", ["", "a", "a/manifests/", "a/unknown/x", "a/tags/list/x", "a/_moorage/x/y/z"]
)
def test_unknown(tail: str) -> None:
    assert parse_path(tail) is None
