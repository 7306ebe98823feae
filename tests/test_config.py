from __future__ import annotations

from pathlib import Path

import pytest

from moorage.config import ENVIRONMENT, DocumentError, load_settings
from moorage.policy import Pattern


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.listen == "127.0.0.1:5000"
    assert settings.data == Path("./data")
    assert settings.workers == 2
    assert settings.storage.driver == "filesystem"
    assert settings.metadata.backend == "sqlite"
    assert settings.policy.configured() is None
    assert settings.admission.validation.parsed() == ()


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text(
        'listen = "0.0.0.0:6000"\nworkers = 3\n[uploads]\nttl = 60\n[auth]\nanonymous_pull = true\n'
    )
    settings = load_settings(config, env={"MOORAGE_WORKERS": "4", "MOORAGE_DATA": "/srv/x"})
    assert settings.listen == "0.0.0.0:6000"
    assert settings.workers == 4
    assert settings.data == Path("/srv/x")
    assert settings.uploads.ttl == 60.0
    assert settings.auth.anonymous_pull is True
    flagged = load_settings(
        config,
        env={"MOORAGE_WORKERS": "4", "MOORAGE_STORAGE_DRIVER": "s3"},
        overrides={"workers": 1, "storage.driver": "memory"},
    )
    assert (flagged.workers, flagged.storage.driver) == (1, "memory")
    assert flagged.port == 6000


#: Every variable a setting has been read from (the names users set).
VARIABLES = (
    "LISTEN",
    "DATA",
    "WORKERS",
    "TLS_CERT",
    "TLS_KEY",
    "AUTH_HTPASSWD",
    "AUTH_ANONYMOUS_PULL",
    "AUTH_ADMINS",
    "STORAGE_DRIVER",
    "STORAGE_S3_ENDPOINT",
    "STORAGE_S3_REGION",
    "STORAGE_S3_BUCKET",
    "STORAGE_S3_ACCESS_KEY",
    "STORAGE_S3_SECRET_KEY",
    "STORAGE_S3_PATH_STYLE",
    "STORAGE_S3_PREFIX",
    "STORAGE_S3_REDIRECT",
    "STORAGE_S3_REDIRECT_EXPIRY",
    "STORAGE_S3_PUBLIC_ENDPOINT",
    "STORAGE_S3_CA_FILE",
    "METADATA_BACKEND",
    "METADATA_DSN",
    "METADATA_POOL_SIZE",
    "METADATA_MIGRATE",
    "UPLOADS_TTL",
    "UPLOADS_LEASE",
    "UPLOADS_CHECKPOINT",
    "MANIFESTS_MAX_SIZE",
    "DELETE_ENABLED",
    "MOUNT_AUTOMATIC",
    "GC_GRACE",
    "GC_UNTAGGED_AFTER",
    "GC_KEEP_UNTAGGED",
    "GC_PINS_WINDOW",
    "GC_HISTORY_WINDOW",
    "GC_INTERVAL",
    "GC_INVENTORY_MAX_AGE",
    "GC_RETENTION",
    "LOG_ACCESS",
    "LOG_LEVEL",
    "WEBHOOK_LISTEN",
    "METRICS_ENABLED",
    "ADMISSION_REGISTRY_HOSTS",
    "ADMISSION_ON_FAILURE",
    "ADMISSION_DEADLINE",
    "ADMISSION_CACHE_TTL",
    "ADMISSION_DOCKER_CONFIG",
    "ADMISSION_INSECURE_REGISTRIES",
    "ADMISSION_CA_FILE",
    "ADMISSION_KUBERNETES",
    "ADMISSION_KUBERNETES_API",
    "ADMISSION_KUBERNETES_TOKEN_FILE",
    "ADMISSION_KUBERNETES_CA_FILE",
    "ADMISSION_INVENTORY_INTERVAL",
    "ADMISSION_REMOTE",
    "ADMISSION_IMMUTABLE_REMOTE_TAGS",
    "ADMISSION_VALIDATION_RULES",
    "POLICY_DEFAULT",
    "POLICY_RULES",
)


def test_environment_variables_keep_their_names() -> None:
    """``MOORAGE_`` and the TOML path: the names users already set."""
    assert set(ENVIRONMENT) == {f"MOORAGE_{name}" for name in VARIABLES}


def test_values_from_the_environment_are_parsed() -> None:
    settings = load_settings(
        env={
            "MOORAGE_DELETE_ENABLED": "off",
            "MOORAGE_LOG_ACCESS": "Yes",
            "MOORAGE_UPLOADS_LEASE": "2.5",
            "MOORAGE_AUTH_ADMINS": "alice, bob,",
            "MOORAGE_ADMISSION_INSECURE_REGISTRIES": '["a:5000", "b:5000"]',
            "MOORAGE_TLS_CERT": "",
            "MOORAGE_POLICY_RULES": '[{"name": "v", "tags": "v*", "mode": "immutable"}]',
            "MOORAGE_REGISTRY": "http://not-a-setting",
        }
    )
    assert settings.delete.enabled is False and settings.log.access is True
    assert settings.uploads.lease == 2.5
    assert settings.auth.admins == ("alice", "bob")
    assert settings.admission.insecure_registries == ("a:5000", "b:5000")
    assert settings.tls.cert is None
    policy = settings.policy.configured()
    assert policy is not None and policy.default == "mutable"
    assert [(r.name, r.tags) for r in policy.rules] == [("v", (Pattern("v*", False),))]


@pytest.mark.parametrize(
    ("text", "env", "source", "key", "problem"),
    [
        ("nonsense = 1\n", {}, "file", "nonsense", "unknown key (known: admission, auth, "),
        ("workers = 'many'\n", {}, "file", "workers", "expected an integer, not 'many'"),
        (
            "",
            {"MOORAGE_WORKERS": "0"},
            "environment variable MOORAGE_WORKERS",
            "workers",
            "must be at least 1, not 0",
        ),
        (
            "",
            {"MOORAGE_LISTEN": "no-port"},
            "environment variable MOORAGE_LISTEN",
            "listen",
            "expected HOST:PORT, not 'no-port'",
        ),
        (
            "",
            {"MOORAGE_TLS_CERT": "/x.pem"},
            "environment variable MOORAGE_TLS_CERT",
            "tls.key",
            "missing (tls.cert and tls.key must be given together)",
        ),
        (
            "",
            {"MOORAGE_DELETE_ENABLED": "maybe"},
            "environment variable MOORAGE_DELETE_ENABLED",
            "delete.enabled",
            "expected true or false, not 'maybe'",
        ),
        ("workers = [", {}, "file", "", "not valid TOML (Invalid value (at end of document))"),
        # The flat spelling of a sectioned key is not a key.
        (
            'storage_driver = "memory"\n',
            {},
            "file",
            "storage_driver",
            "unknown key; did you mean 'storage'? (known: ",
        ),
        (
            '[storage]\ndriver = "memory"\n',
            {},
            "file",
            "storage.driver",
            "the memory storage driver cannot be shared: use workers = 1",
        ),
        (
            '[storage]\ndriver = "s3"\n[storage.s3]\nendpoint = "http://s3:8333"\n',
            {},
            "file",
            "storage.s3.bucket",
            "missing (the s3 storage driver needs it)",
        ),
        (
            '[storage.s3]\nendpiont = "http://s3:8333"\n',
            {},
            "file",
            "storage.s3.endpiont",
            "unknown key; did you mean 'endpoint'? (known: access_key, bucket, ca_file, ",
        ),
        (
            '[storage]\ndriver = "tape"\n',
            {},
            "file",
            "storage.driver",
            "expected one of 'filesystem', 's3', 'memory', not 'tape'",
        ),
        (
            '[metadata]\nbackend = "postgres"\n',
            {},
            "file",
            "metadata.dsn",
            "missing (the postgres metadata backend needs it)",
        ),
        (
            '[metadata]\nbackend = "mysql"\n',
            {},
            "file",
            "metadata.backend",
            "expected 'sqlite' or 'postgres', not 'mysql'",
        ),
        (
            "",
            {"MOORAGE_METADATA_BACKEND": "postgres", "MOORAGE_METADATA_POOL_SIZE": "0"},
            "environment variable MOORAGE_METADATA_POOL_SIZE",
            "metadata.pool_size",
            "must be at least 1, not 0",
        ),
        (
            "[metadata]\ndsn = 5\n",
            {},
            "file",
            "metadata.dsn",
            "expected a string (the value is secret: not shown)",
        ),
        (
            '[log]\nlevel = "info"\n',
            {},
            "file",
            "log.level",
            "expected a level name (CRITICAL, DEBUG, ERROR, ",
        ),
        (
            '[webhook]\nlisten = "0.0.0.0:8443"\n',
            {},
            "file",
            "webhook.listen",
            "the admission webhooks are served over HTTPS only: give tls.cert and tls.key",
        ),
        (
            '[[policy.rules]]\nname = "v"\nmode = "frozen"\n',
            {},
            "file",
            "policy.rules: rule 'v': mode",
            "expected 'immutable' or 'mutable', not 'frozen'",
        ),
        (
            '[policy]\nrules = [{mode = "mutable"}, {name = "rule-1", mode = "mutable"}]\n',
            {},
            "file",
            "policy.rules",
            "rule names must be unique: rule-1",
        ),
        (
            '[[admission.immutable_remote_tags]]\nrepositories = "docker.io/library/*"\n'
            'tags = ["1.*", "regex:("]\n',
            {},
            "file",
            "admission.immutable_remote_tags[0].tags[1]",
            "invalid pattern 'regex:(': ",
        ),
        (
            '[[admission.validation.rules]]\nname = "prod"\nnamespaces = ["prod", "Prod"]\n'
            "refuse_latest = true\n",
            {},
            "file",
            "admission.validation.rules: validation rule 'prod': namespaces[1]",
            "'Prod' is not a namespace pattern",
        ),
        (
            "",
            {"MOORAGE_ADMISSION_VALIDATION_RULES": '[{"name": "r", "namespaces": "*"}]'},
            "environment variable MOORAGE_ADMISSION_VALIDATION_RULES",
            "admission.validation.rules: validation rule 'r'",
            "checks nothing: set one of ",
        ),
        (
            '[[admission.validation.rules]]\nname = "a"\nnamespaces = "*"\nrefuse_latest = true\n'
            '[[admission.validation.rules]]\nname = "a"\nnamespaces = "*"\nrequire_digest = true\n',
            {},
            "file",
            "admission.validation.rules",
            "validation rule names must be unique: a",
        ),
        (
            '[admission]\non_failure = "ignore"\n',
            {},
            "file",
            "admission.on_failure",
            "expected 'deny' or 'warn', not 'ignore'",
        ),
        (
            '[admission]\nkubernetes = "maybe"\n',
            {},
            "file",
            "admission.kubernetes",
            "expected one of 'auto', 'on', 'off', not 'maybe'",
        ),
    ],
)
def test_invalid_settings(
    tmp_path: Path, text: str, env: dict[str, str], source: str, key: str, problem: str
) -> None:
    """Every mistake names where it was made, the key and what is wrong."""
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(DocumentError) as caught:
        load_settings(config, env=env)
    error = caught.value
    assert error.source == (f"config file {config}" if source == "file" else source)
    assert error.key == key
    assert error.problem.startswith(problem), error.problem
    assert str(error).startswith(f"{error.source}: {key + ': ' if key else ''}{problem}")


def test_a_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(DocumentError) as caught:
        load_settings(missing, env={})
    assert str(caught.value) == f"config file {missing}: cannot be read: No such file or directory"


def test_options_are_named_in_messages() -> None:
    with pytest.raises(DocumentError) as caught:
        load_settings(
            env={},
            overrides={"webhook.listen": "8443", "tls.cert": "/c.pem", "tls.key": "/k.pem"},
            override_sources={"webhook.listen": "option --webhook-listen"},
        )
    assert str(caught.value) == (
        "option --webhook-listen: webhook.listen: expected HOST:PORT, not '8443'"
    )
    with pytest.raises(DocumentError) as caught:
        load_settings(
            env={}, overrides={"tls.cert": "/c.pem"}, override_sources={"tls.cert": "--tls-cert"}
        )
    assert str(caught.value) == (
        "--tls-cert: tls.key: missing (tls.cert and tls.key must be given together)"
    )


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
    storage, s3 = settings.storage, settings.storage.s3
    assert storage.driver == "s3"
    assert s3.endpoint == "http://seaweedfs:8333"
    assert s3.bucket == "registry"
    assert s3.secret_key == "s3cret"
    assert s3.region == "us-east-1"
    assert s3.path_style is False
    assert s3.redirect is True
    assert storage.download_redirect == 1200.0
    assert s3.ca_file == Path("/etc/moorage/s3-ca.crt")
    metadata = settings.metadata
    assert metadata.backend == "postgres"
    assert metadata.dsn == "postgresql://moorage@db/moorage"
    assert metadata.pool_size == 4
    assert metadata.migrate is True
    assert metadata.postgres.dsn == metadata.dsn


def test_upload_checkpoints_and_leases(tmp_path: Path) -> None:
    defaults = load_settings(env={})
    assert (defaults.uploads.checkpoint, defaults.uploads.lease) == (64 * 1024 * 1024, 30.0)
    config = tmp_path / "moorage.toml"
    config.write_text("[uploads]\ncheckpoint = 1048576\nlease = 12.5\n")
    settings = load_settings(config, env={})
    assert (settings.uploads.checkpoint, settings.uploads.lease) == (1024 * 1024, 12.5)
    assert load_settings(env={"MOORAGE_UPLOADS_CHECKPOINT": "0"}).uploads.checkpoint == 0
    for env, problem in (
        (
            {"MOORAGE_UPLOADS_CHECKPOINT": "4096"},
            "uploads.checkpoint: must be 0 (none) or at least 65536 bytes, not 4096",
        ),
        ({"MOORAGE_UPLOADS_LEASE": "0"}, "uploads.lease: must be more than 0, not 0.0"),
    ):
        with pytest.raises(DocumentError) as caught:
            load_settings(env=env)
        assert str(caught.value) == f"environment variable {next(iter(env))}: {problem}"


def test_the_documented_sections(tmp_path: Path) -> None:
    """The README's examples read as they are written."""
    config = tmp_path / "moorage.toml"
    config.write_text(
        'listen = "0.0.0.0:5000"\ndata = "/var/lib/moorage"\nworkers = 2\n'
        '[tls]\ncert = "/etc/moorage/tls.crt"\nkey = "/etc/moorage/tls.key"\n'
        '[auth]\nhtpasswd = "/etc/moorage/htpasswd"\nanonymous_pull = true\n'
        "[uploads]\nttl = 86400\ncheckpoint = 67108864\nlease = 30\n"
        "[delete]\nenabled = true\n"
        '[policy]\ndefault = "mutable"\n'
        '[[policy.rules]]\nname = "prod"\nrepositories = ["prod/**"]\nexcept_tags = ["latest"]\n'
        'mode = "immutable"\n'
        '[admission]\nregistry_hosts = ["moorage.moorage.svc:5000"]\non_failure = "deny"\n'
        'deadline = 5.0\nkubernetes = "auto"\n'
        '[[admission.immutable_remote_tags]]\nrepositories = ["docker.io/library/*"]\n'
        'tags = ["regex:[0-9]+\\\\.[0-9]+\\\\.[0-9]+"]\n'
        '[[admission.validation.rules]]\nname = "prod"\nnamespaces = ["prod", "prod-*"]\n'
        'allowed_sources = ["moorage.moorage.svc:5000", "docker.io/library/*"]\n'
        "refuse_latest = true\n"
    )
    settings = load_settings(config, env={})
    assert settings.tls.cert == Path("/etc/moorage/tls.crt")
    assert settings.auth.htpasswd == Path("/etc/moorage/htpasswd")
    policy = settings.policy.configured()
    assert policy is not None and policy.decide("prod/app", "v1").immutable
    assert not policy.decide("prod/app", "latest").immutable
    remote = settings.admission.immutable_tags()
    assert remote.decide("docker.io/library/nginx", "1.25.3").immutable
    assert not remote.decide("docker.io/library/nginx", "latest").immutable
    (rule,) = settings.admission.validation.parsed()
    assert rule.name == "prod" and rule.refuse_latest and rule.applies_to("prod-eu")
