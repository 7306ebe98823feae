"""moorage.admission.credentials: Docker config files, pull secret payloads, host matching."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from moorage.admission.credentials import (
    BasicAuth,
    DockerConfigFile,
    host_matches,
    load_docker_config,
    parse_docker_config,
    split_key,
)
from moorage.documents import DocumentError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config(auths: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"auths": auths, **extra})


def test_auth_field_and_username_password() -> None:
    credentials = parse_docker_config(
        config(
            {
                "registry.example.com": {"auth": b64("alice:pa:ss"), "email": "a@example.com"},
                "other.example.com:5000": {"username": "bob", "password": "secret"},
            }
        ),
        "test",
    )
    assert credentials.for_host("registry.example.com") == BasicAuth("alice", "pa:ss")
    assert credentials.for_host("other.example.com:5000") == BasicAuth("bob", "secret")
    assert credentials.for_host("other.example.com") is None
    assert credentials.for_host("unknown.example.com") is None
    assert BasicAuth("alice", "pa:ss").header() == "Basic " + b64("alice:pa:ss")


def test_auth_wins_over_username_and_password() -> None:
    credentials = parse_docker_config(
        config({"r.example": {"auth": b64("u1:p1"), "username": "u2", "password": "p2"}}), "t"
    )
    assert credentials.for_host("r.example") == BasicAuth("u1", "p1")


def test_identity_token() -> None:
    credentials = parse_docker_config(
        config({"r.example": {"auth": b64("alice:"), "identitytoken": "refresh"}}), "t"
    )
    assert credentials.for_host("r.example") == BasicAuth("alice", "", "refresh")


@pytest.mark.parametrize(
    "key",
    [
        "https://index.docker.io/v1/",
        "index.docker.io",
        "registry-1.docker.io",
        "docker.io",
        "https://docker.io",
        "https://registry-1.docker.io/v2/",
    ],
)
def test_docker_hub_aliases(key: str) -> None:
    credentials = parse_docker_config(config({key: {"auth": b64("hub:pw")}}), "t")
    assert credentials.for_host("docker.io", "library/nginx") == BasicAuth("hub", "pw")
    assert credentials.for_host("index.docker.io") == BasicAuth("hub", "pw")
    assert credentials.for_host("quay.io") is None


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("registry.example.com", ("registry.example.com", "")),
        ("Registry.Example.com:5000", ("registry.example.com:5000", "")),
        ("https://registry.example.com/v1/", ("registry.example.com", "")),
        ("http://registry.example.com", ("registry.example.com", "")),
        ("https://registry.example.com:443/v2/", ("registry.example.com:443", "")),
        ("registry.example.com/team/", ("registry.example.com", "team")),
        ("https://registry.example.com/v2/team/app", ("registry.example.com", "team/app")),
        ("[::1]:5000", ("[::1]:5000", "")),
    ],
)
def test_keys(key: str, expected: tuple[str, str]) -> None:
    assert split_key(key) == expected


def test_scheme_and_version_path_do_not_matter() -> None:
    credentials = parse_docker_config(
        config(
            {
                "https://a.example/v1/": {"auth": b64("a:1")},
                "http://b.example:5000": {"auth": b64("b:2")},
            }
        ),
        "t",
    )
    assert credentials.for_host("a.example") == BasicAuth("a", "1")
    assert credentials.for_host("b.example:5000") == BasicAuth("b", "2")


def test_paths_and_globs_most_specific_first() -> None:
    credentials = parse_docker_config(
        config(
            {
                "*.example.com": {"auth": b64("glob:1")},
                "registry.example.com": {"auth": b64("host:2")},
                "registry.example.com/team": {"auth": b64("team:3")},
                "registry.example.com/team/app": {"auth": b64("app:4")},
            }
        ),
        "t",
    )
    assert credentials.for_host("registry.example.com", "team/app") == BasicAuth("app", "4")
    assert [a.username for a in credentials.matching("registry.example.com", "team/app")] == [
        "app",
        "team",
        "host",
        "glob",
    ]
    assert credentials.for_host("registry.example.com", "team/other") == BasicAuth("team", "3")
    assert credentials.for_host("registry.example.com", "teams/x") == BasicAuth("host", "2")
    assert credentials.for_host("other.example.com", "x") == BasicAuth("glob", "1")
    assert credentials.for_host("a.b.example.com") is None  # one label per *
    assert credentials.for_host("other.example.com:5000") is None  # ports must be equal


def test_host_matches() -> None:
    assert host_matches("*.example.com:5000", "r.example.com:5000")
    assert not host_matches("*.example.com:5000", "r.example.com")
    assert host_matches("r*.example.com", "registry.example.com")
    assert host_matches("[::1]:5000", "[::1]:5000")
    assert not host_matches("[::1]", "1")


def test_empty_entries_and_credential_helpers_are_ignored() -> None:
    credentials = parse_docker_config(
        config(
            {"ghcr.io": {}, "quay.io": {"auth": ""}, "r.example": {"auth": b64("u:p")}},
            credsStore="desktop",
            credHelpers={"gcr.io": "gcloud", "https://eu.gcr.io": "gcloud"},
            HttpHeaders={"User-Agent": "x"},
            psFormat="table",
        ),
        "t",
    )
    assert credentials.for_host("ghcr.io") is None
    assert credentials.for_host("quay.io") is None
    assert credentials.for_host("r.example") == BasicAuth("u", "p")
    assert credentials.helper_hosts == frozenset({"gcr.io", "eu.gcr.io"})
    assert credentials.helper_for("anything")  # credsStore holds every registry
    only_helpers = parse_docker_config(json.dumps({"credHelpers": {"gcr.io": "gcloud"}}), "t")
    assert only_helpers.entries == ()
    assert only_helpers.helper_for("gcr.io") and not only_helpers.helper_for("quay.io")


def test_legacy_dockercfg() -> None:
    legacy = json.dumps(
        {
            "https://index.docker.io/v1/": {"auth": b64("hub:pw"), "email": "x@example.com"},
            "legacy.example.com": {"username": "u", "password": "p", "email": "x@example.com"},
        }
    )
    for credentials in (
        parse_docker_config(legacy, "t"),
        parse_docker_config(legacy, "t", legacy=True),
    ):
        assert credentials.for_host("docker.io") == BasicAuth("hub", "pw")
        assert credentials.for_host("legacy.example.com") == BasicAuth("u", "p")


def test_dockerconfigjson_secret_payload() -> None:
    """What ``kubectl create secret docker-registry`` writes."""
    payload = json.dumps(
        {
            "auths": {
                "registry.example.com": {
                    "username": "team-a",
                    "password": "s3cret",
                    "auth": b64("team-a:s3cret"),
                }
            }
        }
    ).encode()
    credentials = parse_docker_config(payload, "pull secret team-a/regcred", legacy=False)
    assert credentials.source == "pull secret team-a/regcred"
    assert credentials.for_host("registry.example.com") == BasicAuth("team-a", "s3cret")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "config.json: not valid JSON ("),
        ("[]", "config.json: expected a table/object, not a list"),
        ('{"auths": []}', "config.json: auths: expected a table/object, not a list"),
        (
            '{"auths": {"r.example": "x"}}',
            "config.json: auths['r.example']: expected a table/object, not 'x'",
        ),
        (
            '{"auths": {"r.example": {"auth": "%%%"}}}',
            "config.json: auths['r.example'].auth: not base64",
        ),
        (
            '{"auths": {"r.example": {"auth": "' + b64("nocolon") + '"}}}',
            "config.json: auths['r.example'].auth: must be base64 of username:password",
        ),
        (
            '{"auths": {"r.example": {"username": 5}}}',
            "config.json: auths['r.example'].username: expected a string, not 5",
        ),
        (
            '{"auths": {"r.example": {"password": 12345}}}',
            "config.json: auths['r.example'].password: expected a string (the value is secret",
        ),
        (
            '{"auths": {"https://": {"auth": "' + b64("u:p") + '"}}}',
            "config.json: auths['https://']: the key names no registry host",
        ),
        ('{"r.example": []}', "config.json: ['r.example']: expected a table/object, not a list"),
        ('{"credHelpers": []}', "config.json: credHelpers: expected a table/object, not a list"),
    ],
)
def test_errors_name_the_file_and_the_fault(document: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_docker_config(document, "config.json")
    assert message in str(caught.value)
    assert "12345" not in str(caught.value)


def test_load_docker_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with pytest.raises(
        DocumentError, match=rf"^docker config {path}: cannot be read: No such file"
    ):
        load_docker_config(path)
    path.write_text("{")
    with pytest.raises(DocumentError, match=rf"^docker config {path}: not valid JSON"):
        load_docker_config(path)
    path.write_text(config({"r.example": {"auth": b64("u:p")}}))
    credentials = load_docker_config(path)
    assert credentials.source == f"docker config {path}"
    assert credentials.for_host("r.example") == BasicAuth("u", "p")


def test_docker_config_file_is_reread_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.json"
    path.write_text(config({"r.example": {"auth": b64("u:first")}}))
    watched = DockerConfigFile(path)
    assert watched().for_host("r.example") == BasicAuth("u", "first")
    # A mounted Secret is replaced by a rename: a new inode.
    replacement = tmp_path / "new.json"
    replacement.write_text(config({"r.example": {"auth": b64("u:second")}}))
    os.replace(replacement, path)
    assert watched().for_host("r.example") == BasicAuth("u", "second")
    path.write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="moorage.admission"):
        assert watched().for_host("r.example") == BasicAuth("u", "second")
    assert f"docker config {path}: not valid JSON" in caplog.text
    path.unlink()
    assert watched().for_host("r.example") == BasicAuth("u", "second")
