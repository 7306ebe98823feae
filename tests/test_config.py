from __future__ import annotations

from pathlib import Path

import pytest

from moorage.config import ConfigError, load_settings


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.listen == "127.0.0.1:5000"
    assert settings.data == Path("./data")
    assert settings.workers == 2


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text(
        'listen = "0.0.0.0:6000"\nworkers = 3\n[uploads]\nttl = 60\n[auth]\nanonymous_pull = true\n'
    )
    settings = load_settings(config, env={"MOORAGE_WORKERS": "4", "MOORAGE_DATA": "/srv/x"})
    assert settings.listen == "0.0.0.0:6000"
    assert settings.workers == 4
    assert settings.data == Path("/srv/x")
    assert settings.uploads_ttl == 60.0
    assert settings.auth_anonymous_pull is True
    flagged = load_settings(config, env={"MOORAGE_WORKERS": "4"}, overrides={"workers": 1})
    assert flagged.workers == 1
    assert flagged.port == 6000


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("nonsense = 1\n", {}),
        ("workers = 'many'\n", {}),
        ("", {"MOORAGE_WORKERS": "0"}),
        ("", {"MOORAGE_LISTEN": "no-port"}),
        ("", {"MOORAGE_TLS_CERT": "/x.pem"}),
        ("", {"MOORAGE_DELETE_ENABLED": "maybe"}),
        ("workers = [", {}),
        ('storage_driver = "memory"\n', {}),
        ('[storage]\ndriver = "s3"\n[storage.s3]\nendpoint = "http://s3:8333"\n', {}),
        ('[storage]\ndriver = "tape"\n', {}),
        ('[metadata]\nbackend = "postgres"\n', {}),
        ('[metadata]\nbackend = "mysql"\n', {}),
        ("", {"MOORAGE_METADATA_BACKEND": "postgres", "MOORAGE_METADATA_POOL_SIZE": "0"}),
    ],
)
def test_invalid_settings(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError):
        load_settings(config, env=env)


def test_scale_out_settings(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text(
        "[storage]\n"
        'driver = "s3"\n'
        "[storage.s3]\n"
        'endpoint = "http://seaweedfs:8333"\n'
        'bucket = "registry"\n'
        'access_key = "moorage"\n'
        "path_style = false\n"
        "redirect = true\n"
        'ca_file = "/etc/moorage/s3-ca.crt"\n'
        "[metadata]\n"
        'backend = "postgres"\n'
        "pool_size = 4\n"
    )
    settings = load_settings(
        config,
        env={
            "MOORAGE_STORAGE_S3_SECRET_KEY": "s3cret",
            "MOORAGE_METADATA_DSN": "postgresql://moorage@db/moorage",
        },
    )
    assert settings.storage_driver == "s3"
    assert settings.storage_s3_endpoint == "http://seaweedfs:8333"
    assert settings.storage_s3_bucket == "registry"
    assert settings.storage_s3_secret_key == "s3cret"
    assert settings.storage_s3_region == "us-east-1"
    assert settings.storage_s3_path_style is False
    assert settings.storage_s3_redirect is True
    assert settings.storage_s3_ca_file == Path("/etc/moorage/s3-ca.crt")
    assert settings.metadata_backend == "postgres"
    assert settings.metadata_dsn == "postgresql://moorage@db/moorage"
    assert settings.metadata_pool_size == 4
    assert settings.metadata_migrate is True


def test_upload_checkpoints_and_leases(tmp_path: Path) -> None:
    defaults = load_settings(env={})
    assert (defaults.uploads_checkpoint, defaults.uploads_lease) == (64 * 1024 * 1024, 30.0)
    config = tmp_path / "moorage.toml"
    config.write_text("[uploads]\ncheckpoint = 1048576\nlease = 12.5\n")
    settings = load_settings(config, env={})
    assert (settings.uploads_checkpoint, settings.uploads_lease) == (1024 * 1024, 12.5)
    assert load_settings(env={"MOORAGE_UPLOADS_CHECKPOINT": "0"}).uploads_checkpoint == 0
    for env in ({"MOORAGE_UPLOADS_CHECKPOINT": "4096"}, {"MOORAGE_UPLOADS_LEASE": "0"}):
        with pytest.raises(ConfigError):
            load_settings(env=env)
