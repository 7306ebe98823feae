"""moorage.reference: image references normalised as Docker and containerd do."""

from __future__ import annotations

import pytest

from moorage.reference import ReferenceError, parse_reference

D1 = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("library/nginx", "docker.io", "library/nginx", "latest", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/team/app", "docker.io", "team/app", "latest", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("quay.io/coreos/etcd:v3.5", "quay.io", "coreos/etcd", "v3.5", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
        ("127.0.0.1:5000/team/app:today", "127.0.0.1:5000", "team/app", "today", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        (f"app@{D1}", "docker.io", "library/app", None, D1),
        (f"app:1.0@{D1}", "docker.io", "library/app", "1.0", D1),
        (f"reg.example.com:443/a/b/c:x@{D1}", "reg.example.com:443", "a/b/c", "x", D1),
    ],
)
def test_parse(text: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.pinned is (digest is not None)


def test_pinning_keeps_the_tag() -> None:
    ref = parse_reference("127.0.0.1:5000/team/app:today")
    assert ref.with_digest(D1) == f"127.0.0.1:5000/team/app:today@{D1}"
    assert str(parse_reference("nginx")) == "docker.io/library/nginx:latest"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " nginx",
        "Nginx",
        "a:b:c",
        "app@sha256:zz",
        "a//b",
        "host:port/a",
        "a:" + "t" * 129,
        "app:-x",
        "/app",
        "app/",
        "docker.io/" + "a" * 250,
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(text)
