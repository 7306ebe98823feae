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
    ],
)
def test_invalid_settings(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError):
        load_settings(config, env=env)
