"""The ``moorage tags`` and ``moorage policy`` commands, run as processes against a real
``moorage serve``; the ``[policy]`` of a configuration file across restarts; and the
settings ``moorage serve`` refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from moorage.commands.render import human_size
from moorage.times import parse_time
from tests.support.http import push_image, request
from tests.support.images import seeded_image, sha256
from tests.support.server import RunningRegistry, free_port, start_moorage
from tests.support.waiting import wait_until

POLICY_TOML = """\
# A configuration file may be used as it is: only its [policy] table is read.
[uploads]
ttl = 3600

[policy]
default = "mutable"

[[policy.rules]]
name = "dev"
repositories = ["dev/**"]
mode = "mutable"

[[policy.rules]]
name = "versions"
tags = ["regex:v?[0-9]+(\\\\.[0-9]+)+(-[0-9A-Za-z.-]+)?", "regex:[0-9]{4}-[0-9]{2}-[0-9]{2}"]
mode = "immutable"

[[policy.rules]]
name = "prod"
repositories = ["prod/**"]
except_tags = ["latest"]
mode = "immutable"
"""
VERSION_TAGS = [
    "regex:v?[0-9]+(\\.[0-9]+)+(-[0-9A-Za-z.-]+)?",
    "regex:[0-9]{4}-[0-9]{2}-[0-9]{2}",
]
RULES: list[dict[str, Any]] = [
    {"name": "dev", "mode": "mutable", "repositories": ["dev/**"], "tags": ["*"]},
    {"name": "versions", "mode": "immutable", "repositories": ["**"], "tags": VERSION_TAGS},
    {
        "name": "prod",
        "mode": "immutable",
        "repositories": ["prod/**"],
        "tags": ["*"],
        "except_tags": ["latest"],
    },
]


# -- running the CLI ---------------------------------------------------------------------------


def moorage(
    registry: RunningRegistry | str, *args: str, status: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m moorage ARGS`` with MOORAGE_REGISTRY set; check its exit status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["MOORAGE_REGISTRY"] = registry if isinstance(registry, str) else registry.url
    result = subprocess.run(
        [sys.executable, "-m", "moorage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, (
        f"moorage {' '.join(args)} exited {result.returncode}, expected {status}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    if status == 0:
        assert result.stderr == "", result.stderr
    else:
        assert "Traceback" not in result.stderr, result.stderr
    return result


def moorage_json(registry: RunningRegistry | str, *args: str) -> Any:
    return json.loads(moorage(registry, *args, "--json").stdout)


# -- pushing over HTTP ---------------------------------------------------------------------------


def push(registry: RunningRegistry, repo: str, tag: str, seed: str) -> str:
    """Push ``seeded_image(seed)`` (the same seed, the same digest) as ``repo:tag``."""
    return push_image(registry.address, repo, seeded_image(seed, layers=1), tag).digest


def tag_digest(registry: RunningRegistry, repo: str, tag: str) -> str | None:
    reply = request(registry.address, "HEAD", f"/v2/{repo}/manifests/{tag}")
    if reply.status == 404:
        return None
    assert reply.status == 200, reply.status
    return reply.header("Docker-Content-Digest")


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    running = start_moorage(tmp_path / "registry", workers=1)
    yield running
    running.stop()


# -- moorage policy --------------------------------------------------------------------------------


def test_policy_set_list_check_and_changes(registry: RunningRegistry, tmp_path: Path) -> None:
    listed = moorage(registry, "policy", "list").stdout
    assert "version 0" in listed
    assert "default: mutable" in listed

    toml_file = tmp_path / "rules.toml"
    toml_file.write_text(POLICY_TOML)
    out = moorage(registry, "policy", "set", str(toml_file)).stdout
    assert out.startswith("version 1 in force"), out
    for name in ("dev", "versions", "prod"):
        assert name in out

    table = moorage(registry, "policy", "list").stdout
    lines = table.splitlines()
    assert lines[0] == "version 1"
    assert lines[1].split() == ["#", "NAME", "MODE", "REPOSITORIES", "TAGS", "EXCEPT"]
    assert lines[2].split()[:3] == ["1", "dev", "mutable"]
    assert lines[3].split()[:3] == ["2", "versions", "immutable"]
    assert lines[4].split() == ["3", "prod", "immutable", "prod/**", "*", "latest"]
    assert "default: mutable (when no rule matches)" in table
    assert lines[-1].startswith("last changed ")
    assert lines[-1].endswith("by 127.0.0.1 (api)")
    data = moorage_json(registry, "policy", "list")
    assert data["version"] == 1
    assert data["default"] == "mutable"
    assert data["rules"] == RULES
    assert data["updated"]["source"] == "api"

    checked = moorage(registry, "policy", "check", "team/app:1.4.0").stdout.strip()
    assert checked == "team/app:1.4.0 is immutable: rule 'versions'"
    checked = moorage(registry, "policy", "check", "team/app:today").stdout.strip()
    assert checked == "team/app:today is mutable: the default (mutable)"
    checked = moorage(registry, "policy", "check", "dev/x:1.4.0").stdout.strip()
    assert checked == "dev/x:1.4.0 is mutable: rule 'dev'"
    decision = moorage_json(registry, "policy", "check", "prod/web:stable")
    assert decision["mode"] == "immutable"
    assert decision["rule"]["name"] == "prod"

    json_file = tmp_path / "rules.json"
    json_file.write_text(
        json.dumps(
            {
                "default": "immutable",
                "rules": [{"name": "scratch", "repositories": "scratch/**", "mode": "mutable"}],
            }
        )
    )
    out = moorage(registry, "policy", "set", str(json_file)).stdout
    assert out.startswith("version 2 in force"), out
    data = moorage_json(registry, "policy", "list")
    assert data["version"] == 2
    assert data["default"] == "immutable"
    assert [r["name"] for r in data["rules"]] == ["scratch"]
    checked = moorage(registry, "policy", "check", "team/app:today").stdout.strip()
    assert checked == "team/app:today is immutable: the default (immutable)"

    changes = moorage(registry, "policy", "changes").stdout.splitlines()
    assert changes[0].split() == ["TIME", "USER", "CLIENT", "SOURCE", "RULES"]
    assert [line.split()[1:] for line in changes[1:]] == [
        ["-", "127.0.0.1", "api", "1"],
        ["-", "127.0.0.1", "api", "3"],
    ]
    data = moorage_json(registry, "policy", "changes")
    assert [c["new"]["default"] for c in data["changes"]] == ["immutable", "mutable"]
    assert data["changes"][1]["old"] is None
    assert data["changes"][0]["old"]["rules"] == RULES
    assert len(moorage_json(registry, "policy", "changes", "-n", "1")["changes"]) == 1


def test_policy_set_refuses_bad_files(registry: RunningRegistry, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"rules": [{"name": "x", "mode": "frozen"}]}))
    result = moorage(registry, "policy", "set", str(unknown), status=1)
    assert result.stderr == (
        "moorage: POLICY_INVALID: the policy sent to PUT /v2/_moorage/policy/rules: "
        "rules: rule 'x': mode: expected 'immutable' or 'mutable', not 'frozen'\n"
    )

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = moorage(registry, "policy", "set", str(broken), status=2)
    assert result.stderr.startswith(f"moorage: policy file {broken}: not valid JSON (")

    broken_toml = tmp_path / "broken.toml"
    broken_toml.write_text("[policy\n")
    result = moorage(registry, "policy", "set", str(broken_toml), status=2)
    assert result.stderr.startswith(f"moorage: policy file {broken_toml}: not valid TOML (")

    missing = tmp_path / "missing.toml"
    result = moorage(registry, "policy", "set", str(missing), status=2)
    assert (
        result.stderr
        == f"moorage: policy file {missing}: cannot be read: No such file or directory\n"
    )
    assert moorage_json(registry, "policy", "list")["version"] == 0


# -- moorage serve: settings that cannot be used ------------------------------------------------


def serve_refused(tmp_path: Path, *args: str, env: dict[str, str], status: int) -> str:
    """``moorage serve ARGS`` that stops before serving: its stderr (no traceback)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "moorage", "serve", "--listen", f"127.0.0.1:{free_port()}",
         "--data", str(tmp_path / "data"), *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_serve_names_the_source_key_and_problem_of_a_bad_setting(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text('[storage]\ndriver = "s3"\n[storage.s3]\nendpoint = "http://s3:8333"\n')
    stderr = serve_refused(tmp_path, "--config", str(config), env={}, status=2)
    assert stderr == (
        f"moorage: config file {config}: storage.s3.bucket: missing (the s3 storage driver "
        "needs it)\n"
    )
    stderr = serve_refused(tmp_path, env={"MOORAGE_WORKERS": "0"}, status=2)
    assert (
        stderr
        == "moorage: environment variable MOORAGE_WORKERS: workers: must be at least 1, not 0\n"
    )
    stderr = serve_refused(tmp_path, "--storage", "memory", env={}, status=2)
    assert stderr == (
        "moorage: option --storage: storage.driver: the memory storage driver cannot be shared: "
        "use workers = 1\n"
    )
    assert not (tmp_path / "data").exists()


def test_serve_refuses_a_broken_htpasswd_file_before_starting_workers(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("# users\nalice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    stderr = serve_refused(
        tmp_path, "--htpasswd", str(htpasswd), "--workers", "2", env={}, status=1
    )
    assert stderr == (
        f"moorage: cannot serve: htpasswd file {htpasswd}: line 2: only bcrypt hashes are "
        "supported (htpasswd -B)\n"
    )


# -- moorage tags ----------------------------------------------------------------------------------


def test_tags_history_at_restore_and_digest(registry: RunningRegistry, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(POLICY_TOML)
    moorage(registry, "policy", "set", str(rules))

    # The registry, another process, stamps events with the wall clock: before the tag moves,
    # wait until that clock is past its creation by more than the millisecond the history
    # shows, so that a time between the two events can be asked for.
    first = push(registry, "team/app", "today", "cli-a")
    created_at = parse_time(
        moorage_json(registry, "tags", "history", "team/app:today")["events"][0]["time"]
    )
    wait_until(lambda: time.time() > created_at + 0.01, "the clock to pass the tag's creation")
    second = push(registry, "team/app", "today", "cli-b")
    assert push(registry, "team/app", "1.4.0", "cli-a") == first

    table = moorage(registry, "tags", "history", "team/app:today").stdout.splitlines()
    assert table[0].split() == [
        "TIME",
        "ACTION",
        "FROM",
        "TO",
        "USER",
        "CLIENT",
        "REQUEST",
        "RULE",
    ]
    moved, created = (line.split() for line in table[1:])
    assert moved[1:6] == ["moved", first[:19], second[:19], "-", "127.0.0.1"]
    assert created[1:6] == ["created", "-", first[:19], "-", "127.0.0.1"]
    events = moorage_json(registry, "tags", "history", "team/app:today")["events"]
    assert [(e["action"], e["old_digest"], e["new_digest"]) for e in events] == [
        ("moved", first, second),
        ("created", None, first),
    ]
    assert [e["time"] for e in events] == [moved[0], created[0]]
    limited = moorage_json(registry, "tags", "history", "team/app:today", "-n", "1")
    assert len(limited["events"]) == 1

    t_moved, t_created = (parse_time(e["time"]) for e in events)
    between = iso((t_created + t_moved) / 2)
    out = moorage(registry, "tags", "at", "team/app:today", between).stdout
    assert out.split()[0] == first, out
    assert "created" in out
    out = moorage(registry, "tags", "at", "team/app:today", iso(t_moved + 0.02)).stdout
    assert out.split()[0] == second, out
    out = moorage(registry, "tags", "at", "team/app:today", "2000-01-01").stdout
    assert out.strip() == "team/app:today did not exist at 2000-01-01T00:00:00.000Z"
    data = moorage_json(registry, "tags", "at", "team/app:today", between)
    assert data["digest"] == first

    out = moorage(registry, "tags", "restore", "team/app:today", first).stdout
    assert out.strip() == f"team/app:today -> {first} (was {second})"
    assert tag_digest(registry, "team/app", "today") == first
    assert moorage_json(registry, "tags", "history", "team/app:today")["events"][0]["action"] == (
        "restored"
    )

    spans = moorage(registry, "tags", "digest", first).stdout.splitlines()
    assert spans[0].split() == ["TAG", "SINCE", "UNTIL"]
    rows = [line.split() for line in spans[1:]]
    assert [(row[0], row[2]) for row in rows] == [
        ("team/app:today", events[0]["time"]),
        ("team/app:1.4.0", "now"),
        ("team/app:today", "now"),
    ]
    data = moorage_json(registry, "tags", "digest", first)
    assert [t["current"] for t in data["tags"]] == [False, True, True]
    nothing = sha256(b"nothing")
    out = moorage(registry, "tags", "digest", nothing).stdout
    assert out.strip() == f"no tag ever pointed at {nothing}"

    # Deleted: `at` says so.
    reply = request(registry.address, "DELETE", "/v2/team/app/manifests/today")
    assert reply.status == 202
    out = moorage(registry, "tags", "at", "team/app:today", iso(time.time() + 5)).stdout
    assert out.startswith("team/app:today was deleted at "), out


def test_tags_errors(registry: RunningRegistry, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(POLICY_TOML)
    moorage(registry, "policy", "set", str(rules))
    held = push(registry, "team/app", "1.4.0", "err-a")
    other = push(registry, "team/app", "latest", "err-b")

    result = moorage(registry, "tags", "restore", "team/app:1.4.0", other, status=1)
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("moorage: DENIED: tag team/app:1.4.0 is immutable"), message
    assert "rule 'versions'" in message
    assert held in message
    assert tag_digest(registry, "team/app", "1.4.0") == held

    unknown = sha256(b"unknown")
    result = moorage(registry, "tags", "restore", "team/app:latest", unknown, status=1)
    assert result.stderr.startswith("moorage: MANIFEST_UNKNOWN: "), result.stderr
    assert unknown in result.stderr
    result = moorage(registry, "tags", "at", "team/app:latest", "next tuesday", status=1)
    assert result.stderr.startswith("moorage: PARAMETER_INVALID: "), result.stderr
    result = moorage(registry, "tags", "digest", "sha256:nope", status=1)
    assert result.stderr.startswith("moorage: DIGEST_INVALID: "), result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("tags", "history", "team/app"),
        ("tags", "history", "team/app:"),
        ("tags", "history", ":today"),
        ("tags", "history", "Team/App:today"),
        ("tags", "history", "localhost:5000/team/app"),
        ("tags", "at", "team/app", "2026-01-01"),
        ("tags", "restore", "team/app:-bad", "sha256:" + "0" * 64),
        ("policy", "check", "team/app"),
    ],
)
def test_malformed_repository_tag_exits_2(
    registry: RunningRegistry, command: tuple[str, ...]
) -> None:
    result = moorage(registry, *command, status=2)
    assert result.stdout == ""
    assert result.stderr.startswith("moorage: "), result.stderr


def test_unreachable_registry(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (("policy", "list"), ("tags", "history", "team/app:today")):
        result = moorage(url, *command, status=1)
        assert result.stdout == ""
        assert result.stderr.startswith(f"moorage: cannot reach {url}"), result.stderr
        assert len(result.stderr.splitlines()) == 1
    # --registry wins over $MOORAGE_REGISTRY.
    result = moorage("http://127.0.0.1:9", "policy", "list", "--registry", url, status=1)
    assert f"cannot reach {url}" in result.stderr


# -- [policy] in the configuration file ------------------------------------------------------------


CONFIG_V1 = """\
[policy]
default = "mutable"

[[policy.rules]]
name = "versions"
tags = ["regex:v?[0-9]+(\\\\.[0-9]+)+"]
mode = "immutable"
"""
CONFIG_V2 = (
    CONFIG_V1
    + """
[[policy.rules]]
name = "prod"
repositories = ["prod/**"]
except_tags = ["latest"]
mode = "immutable"
"""
)


def test_configured_policy_across_restarts(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text(CONFIG_V1)
    data = tmp_path / "data"
    args = ("--config", str(config))

    def serve(run: str) -> RunningRegistry:
        return start_moorage(tmp_path / run, workers=1, args=args, data=data)

    registry = serve("run1")
    try:
        listed = moorage_json(registry, "policy", "list")
        assert listed["version"] == 1
        assert [r["name"] for r in listed["rules"]] == ["versions"]
        assert listed["updated"]["source"] == "configuration"
        assert listed["updated"]["user"] is None
        assert moorage(registry, "policy", "list").stdout.rstrip().endswith("(configuration)")
        changes = moorage_json(registry, "policy", "changes")["changes"]
        assert [(c["source"], c["address"], c["user"]) for c in changes] == [
            ("configuration", "config", None)
        ]
        api = tmp_path / "api.json"
        api.write_text(json.dumps({"default": "immutable", "rules": []}))
        moorage(registry, "policy", "set", str(api))
        assert moorage_json(registry, "policy", "list")["version"] == 2
    finally:
        registry.stop()

    # Same configuration: the change made through the API stays in force.
    registry = serve("run2")
    try:
        listed = moorage_json(registry, "policy", "list")
        assert listed["version"] == 2
        assert listed["default"] == "immutable"
        assert listed["rules"] == []
        assert listed["updated"]["source"] == "api"
        checked = moorage(registry, "policy", "check", "team/app:today").stdout.strip()
        assert checked == "team/app:today is immutable: the default (immutable)"
    finally:
        registry.stop()

    # A changed configuration is in force again.
    config.write_text(CONFIG_V2)
    registry = serve("run3")
    try:
        listed = moorage_json(registry, "policy", "list")
        assert listed["version"] == 3
        assert listed["default"] == "mutable"
        assert [r["name"] for r in listed["rules"]] == ["versions", "prod"]
        assert listed["updated"]["source"] == "configuration"
        changes = moorage_json(registry, "policy", "changes")["changes"]
        assert [c["source"] for c in changes] == ["configuration", "api", "configuration"]
        assert changes[0]["old"] == {"default": "immutable", "rules": []}
        checked = moorage(registry, "policy", "check", "prod/web:stable").stdout.strip()
        assert checked == "prod/web:stable is immutable: rule 'prod'"
    finally:
        registry.stop()

    # Restarting with it again installs nothing new.
    registry = serve("run4")
    try:
        assert moorage_json(registry, "policy", "list")["version"] == 3
    finally:
        registry.stop()


# -- moorage usage ---------------------------------------------------------------------------------


def test_usage_table_json_and_counts_across_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def serve(run: str) -> RunningRegistry:
        return start_moorage(tmp_path / run, workers=1, data=data)

    def pull(registry: RunningRegistry, reference: str, method: str = "GET") -> None:
        reply = request(registry.address, method, f"/v2/team/app/manifests/{reference}")
        assert reply.status == 200, reply.body

    registry = serve("run1")
    try:
        digest = push(registry, "team/app", "v1", "usage-a")
        push(registry, "team/tool", "latest", "usage-b")
        pull(registry, "v1")
        pull(registry, digest)
        pull(registry, "v1", "HEAD")  # not a pull
        # One worker: the report flushes its counters first, so they are there at once.
        rows = moorage_json(registry, "usage")["repositories"]
        assert [(r["name"], r["pulls"], r["pushes"], r["tags"]) for r in rows] == [
            ("team/app", 2, 1, 1),
            ("team/tool", 0, 1, 1),
        ]
        app, tool = rows
        assert (app["shared_bytes"], tool["last_pull"]) == (0, None)

        lines = moorage(registry, "usage").stdout.splitlines()
        assert lines[0].split() == [
            "REPOSITORY",
            "MANIFESTS",
            "TAGS",
            "BLOBS",
            "MANIFEST",
            "BYTES",
            "OWN",
            "SHARED",
            "PULLS",
            "LAST",
            "PULL",
            "PUSHES",
            "LAST",
            "PUSH",
        ]
        assert [line.split()[0] for line in lines[1:]] == ["team/app", "team/tool"]
        assert human_size(app["own_bytes"]) in lines[1]
        assert app["last_pull"] in lines[1]
        assert lines[2].split()[-3:-1] == ["-", "1"]  # never pulled, pushed once

        assert moorage_json(registry, "usage", "team/tool")["repositories"] == [tool]
        result = moorage(registry, "usage", "team/none", status=1)
        assert result.stderr.startswith("moorage: NAME_UNKNOWN: "), result.stderr
        pull(registry, "v1")  # counted in memory; written when the registry stops
    finally:
        registry.stop()

    registry = serve("run2")
    try:
        (app,) = moorage_json(registry, "usage", "team/app")["repositories"]
        assert (app["pulls"], app["pushes"]) == (3, 1)
    finally:
        registry.stop()
