"""The validating webhook's decisions (moorage.admission.validation) on AdmissionReview v1
requests: each kind of check, how rules combine, namespaces, messages, and invalid rules."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from moorage.admission.review import AdmissionRequest, parse_review
from moorage.admission.validation import (
    MAX_PROBLEMS,
    TagMode,
    ValidationRule,
    local_tag_mode,
    parse_rules,
    validate,
)
from moorage.documents import DocumentError
from moorage.policy import Decision, Policy
from moorage.reference import ImageReference, parse_reference
from tests.admission.reviews import GROUPS, pod_spec, review, workload

HOST = "registry.internal:5000"
DIGEST = "sha256:" + "a" * 64
POLICY = Policy.from_dict(
    {
        "default": "mutable",
        "rules": [
            {"name": "dev", "repositories": "dev/**", "mode": "mutable"},
            {"name": "releases", "tags": "regex:v?[0-9]+(\\.[0-9]+)+", "mode": "immutable"},
        ],
    }
)
TAG_MODE = local_tag_mode(POLICY, {HOST})


def admission(body: bytes, namespace: str = "prod") -> tuple[AdmissionRequest, Any]:
    """The request as the webhook parses it (moved to ``namespace``), and its oldObject."""
    document = json.loads(body)
    request = document["request"]
    request["namespace"] = namespace
    for obj in (request["object"], request["oldObject"]):
        if obj is not None:
            obj["metadata"]["namespace"] = namespace
    return parse_review(json.dumps(document).encode()), request["oldObject"]


def answer(
    body: bytes,
    rules: list[dict[str, Any]],
    *,
    namespace: str = "prod",
    tag_mode: TagMode = TAG_MODE,
    with_old: bool = True,
) -> dict[str, Any]:
    request, old = admission(body, namespace)
    response = validate(request, parse_rules(rules), tag_mode, old_object=old if with_old else None)
    review_response: dict[str, Any] = response.to_review()["response"]
    assert review_response["uid"] == request.uid
    return review_response


def pod(*images: str, **lists: list[str]) -> bytes:
    return review(workload("Pod", pod_spec(list(images), **lists)))


def rule(**checks: Any) -> dict[str, Any]:
    return {"name": "r", "namespaces": "*", **checks}


def refused(response: dict[str, Any]) -> str:
    assert response["allowed"] is False, response
    assert response["status"]["code"] == 403
    message: str = response["status"]["message"]
    return message


def admitted(response: dict[str, Any]) -> None:
    assert response["allowed"] is True, response
    assert "status" not in response and "patch" not in response


# --- each check on its own: (rule, image, None if admitted or the problem after the image) ---

SOURCES = ["registry.internal:5000/**", "docker.io/library/*"]


@pytest.mark.parametrize(
    ("checks", "image", "problem"),
    [
        # allowed_sources, matched against the normalised domain/path
        ({"allowed_sources": SOURCES}, f"{HOST}/team/app:v1", None),
        ({"allowed_sources": SOURCES}, "docker.io/library/nginx:1.25", None),
        ({"allowed_sources": SOURCES}, "nginx:1.25", None),
        ({"allowed_sources": SOURCES}, "index.docker.io/library/nginx", None),
        (
            {"allowed_sources": SOURCES},
            "bitnami/nginx:1.25",
            "does not come from an allowed source (that is docker.io/bitnami/nginx) "
            "(registry.internal:5000/**, docker.io/library/*)",
        ),
        (
            {"allowed_sources": SOURCES},
            "quay.io/prometheus/node-exporter:v1.8.0",
            "does not come from an allowed source (registry.internal:5000/**, docker.io/library/*)",
        ),
        # a bare host is every repository on it; the port is part of the host
        ({"allowed_sources": [HOST]}, f"{HOST}/a/b/c:v1", None),
        ({"allowed_sources": [HOST]}, "registry.internal/app:v1", "does not come from"),
        ({"allowed_sources": [HOST]}, "registry.internal:5001/app:v1", "does not come from"),
        # hosts compare case-insensitively
        ({"allowed_sources": [HOST]}, "Registry.Internal:5000/app:v1", None),
        ({"allowed_sources": ["REGISTRY.internal:5000/app"]}, f"{HOST}/app:v1", None),
        # "*" stays in one segment, "**" crosses them
        ({"allowed_sources": [f"{HOST}/team/*"]}, f"{HOST}/team/app:v1", None),
        ({"allowed_sources": [f"{HOST}/team/*"]}, f"{HOST}/team/sub/app:v1", "does not come"),
        ({"allowed_sources": [f"{HOST}/team/**"]}, f"{HOST}/team/sub/app:v1", None),
        ({"allowed_sources": [f"{HOST}/team/**"]}, f"{HOST}/teamwork/app:v1", "does not come"),
        ({"allowed_sources": ["*.corp.example"]}, "eu.corp.example/app:1", None),
        ({"allowed_sources": ["*.corp.example"]}, "corp.example.evil.com/app:1", "does not come"),
        # docker.io/<name> is read as Docker reads it
        ({"allowed_sources": ["docker.io/nginx"]}, "nginx", None),
        ({"allowed_sources": ["docker.io/nginx"]}, "nginx-unprivileged", "does not come"),
        ({"allowed_sources": ["docker.io/**"]}, "bitnami/redis:7", None),
        ({"allowed_sources": "docker.io"}, "redis:7", None),
        # regex
        ({"allowed_sources": [f"regex:{HOST}/(team|ops)/.+"]}, f"{HOST}/ops/x:v1", None),
        ({"allowed_sources": [f"regex:{HOST}/(team|ops)/.+"]}, f"{HOST}/dev/x:v1", "does not"),
        # denied_sources
        (
            {"denied_sources": ["docker.io"]},
            "nginx:1.25",
            "comes from a denied source (that is docker.io/library/nginx) (docker.io)",
        ),
        ({"denied_sources": ["docker.io"]}, f"{HOST}/nginx:1.25", None),
        ({"denied_sources": ["evil.example.com"]}, "EVIL.example.com/x:1", "comes from a denied"),
        # Docker Hub's names are normalised whatever the host's case
        (
            {"denied_sources": ["docker.io/library/ubuntu"]},
            "Docker.io/ubuntu:24.04",
            "comes from a denied source (that is docker.io/library/ubuntu)",
        ),
        (
            {"denied_sources": ["docker.io/library/ubuntu"]},
            "INDEX.docker.io/ubuntu",
            "comes from a denied source (that is docker.io/library/ubuntu)",
        ),
        # deny wins over allow; only the denial is reported
        (
            {"allowed_sources": ["docker.io/library/*"], "denied_sources": ["docker.io/ubuntu"]},
            "ubuntu:24.04",
            "comes from a denied source (that is docker.io/library/ubuntu) (docker.io/ubuntu)",
        ),
        (
            {"allowed_sources": ["docker.io/library/*"], "denied_sources": ["docker.io/ubuntu"]},
            "debian:12",
            None,
        ),
        # a digest does not make a source acceptable
        ({"denied_sources": ["docker.io"]}, f"nginx@{DIGEST}", "comes from a denied source"),
        # require_digest
        (
            {"require_digest": True},
            f"{HOST}/app:v1",
            "does not name a digest (write it as image@sha256:...)",
        ),
        ({"require_digest": True}, f"{HOST}/app@{DIGEST}", None),
        ({"require_digest": True}, f"{HOST}/app:v1@{DIGEST}", None),
        # refuse_latest: explicit and implicit, also next to a digest (as pinning leaves it)
        (
            {"refuse_latest": True},
            "nginx",
            'uses the tag "latest" (no tag means it): name a version, or a digest without a tag '
            "(image@sha256:...)",
        ),
        (
            {"refuse_latest": True},
            "nginx:latest",
            'uses the tag "latest": name a version, or a digest without a tag (image@sha256:...)',
        ),
        ({"refuse_latest": True}, f"{HOST}/app", 'uses the tag "latest" (no tag means it)'),
        ({"refuse_latest": True}, "registry.internal:443/app", "(no tag means it)"),
        (
            {"refuse_latest": True},
            f"nginx:latest@{DIGEST}",
            'uses the tag "latest": name a version, or a digest without a tag (image@sha256:...)',
        ),
        ({"refuse_latest": True}, f"{HOST}/team/app:latest@{DIGEST}", 'uses the tag "latest":'),
        ({"refuse_latest": True}, f"nginx@{DIGEST}", None),
        ({"refuse_latest": True}, f"{HOST}/app@{DIGEST}", None),
        ({"refuse_latest": True}, f"nginx:1.25@{DIGEST}", None),
        ({"refuse_latest": True}, "nginx:1.25", None),
        ({"refuse_latest": True}, "nginx:Latest", None),
        ({"refuse_latest": True}, "localhost:5000/latest:v1", None),
        ({"refuse_latest": True}, f"localhost:5000/latest@{DIGEST}", None),
        # refuse_mutable_tags: by the tag policy for this registry's images
        ({"refuse_mutable_tags": True}, f"{HOST}/team/app:v1.2.3", None),
        (
            {"refuse_mutable_tags": True},
            f"{HOST}/team/app:today",
            'uses the tag "today", which is mutable (tag policy: the default (mutable)): '
            "use an immutable tag, or a digest without a tag (image@sha256:...)",
        ),
        (
            {"refuse_mutable_tags": True},
            f"{HOST}/dev/app:1.0",
            "which is mutable (tag policy: rule 'dev')",
        ),
        (
            {"refuse_mutable_tags": True},
            f"{HOST}/team/app",
            'uses the tag "latest", which is mutable',
        ),
        # ... also next to a digest: the tag as written is judged
        (
            {"refuse_mutable_tags": True},
            f"{HOST}/team/app:today@{DIGEST}",
            'uses the tag "today", which is mutable (tag policy: the default (mutable)): '
            "use an immutable tag, or a digest without a tag (image@sha256:...)",
        ),
        ({"refuse_mutable_tags": True}, f"{HOST}/team/app:v1.2.3@{DIGEST}", None),
        ({"refuse_mutable_tags": True}, f"{HOST}/team/app@{DIGEST}", None),
        # ... and no guarantee for other registries' tags
        (
            {"refuse_mutable_tags": True},
            "nginx:1.25",
            'uses the tag "1.25", which no tag policy known to moorage makes immutable: '
            "name a digest without a tag (image@sha256:...)",
        ),
        (
            {"refuse_mutable_tags": True},
            f"nginx:1.25@{DIGEST}",
            'uses the tag "1.25", which no tag policy known to moorage makes immutable',
        ),
        ({"refuse_mutable_tags": True}, f"nginx@{DIGEST}", None),
        # one reason per rule: a missing digest covers latest and mutable tags
        (
            {"require_digest": True, "refuse_latest": True, "refuse_mutable_tags": True},
            "nginx",
            "does not name a digest (write it as image@sha256:...)",
        ),
        (
            {"refuse_latest": True, "refuse_mutable_tags": True},
            "nginx",
            'uses the tag "latest" (no tag means it): name a version, or a digest without a tag',
        ),
        (
            {"require_digest": True, "refuse_latest": True, "refuse_mutable_tags": True},
            f"{HOST}/team/app:latest@{DIGEST}",
            'uses the tag "latest": name a version, or a digest without a tag',
        ),
        (
            {"require_digest": True, "refuse_latest": True, "refuse_mutable_tags": True},
            f"{HOST}/team/app@{DIGEST}",
            None,
        ),
    ],
)
def test_each_check(checks: dict[str, Any], image: str, problem: str | None) -> None:
    response = answer(pod(image), [rule(**checks)])
    if problem is None:
        admitted(response)
        return
    message = refused(response)
    prefix = f'moorage refused this Pod: rule "r": container "c0" (containers) image "{image}" '
    assert message.startswith(prefix), message
    assert problem in message[len(prefix) :]
    assert message.count("; ") == 0  # exactly one problem


def test_the_message_names_rule_container_and_image() -> None:
    obj = workload("Pod", pod_spec(["docker.io/library/nginx:1.25"]))
    obj["spec"]["containers"][0]["name"] = "api"
    rules = [{"name": "prod-sources", "namespaces": "prod", "allowed_sources": f"{HOST}/**"}]
    assert refused(answer(review(obj), rules)) == (
        'moorage refused this Pod: rule "prod-sources": container "api" (containers) image '
        '"docker.io/library/nginx:1.25" does not come from an allowed source '
        "(registry.internal:5000/**)"
    )


# --- which containers are looked at ---

BAD = "docker.io/library/nginx:1.25"
GOOD = f"{HOST}/team/app:v1"


@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_every_kind_judges_every_container_list(kind: str) -> None:
    spec = pod_spec([GOOD, BAD], init=[BAD, GOOD], ephemeral=[BAD] if kind == "Pod" else [])
    message = refused(answer(review(workload(kind, spec)), [rule(allowed_sources=HOST)]))
    sites = ['container "init0" (initContainers)', 'container "c1" (containers)']
    if kind == "Pod":
        sites.append('container "debug0" (ephemeralContainers)')
    problem = f'image "{BAD}" does not come from an allowed source ({HOST})'
    assert message == f"moorage refused this {kind}: " + "; ".join(
        f'rule "r": {site} {problem}' for site in sites
    )


def test_a_deployment_and_a_cronjob_with_only_allowed_images_are_admitted() -> None:
    for kind in ("Deployment", "CronJob"):
        spec = pod_spec([GOOD], init=[f"{HOST}/tools/init:v2"])
        admitted(answer(review(workload(kind, spec)), [rule(allowed_sources=HOST)]))


def test_kinds_without_containers_are_admitted() -> None:
    body = json.loads(pod(BAD))
    body["request"]["kind"]["kind"] = "ConfigMap"
    body["request"]["resource"]["resource"] = "configmaps"
    body["request"]["object"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": "prod"},
        "data": {"image": BAD},
    }
    admitted(answer(json.dumps(body).encode(), [rule(allowed_sources=HOST)]))


def test_ephemeral_containers_subresource_judges_only_them() -> None:
    obj = workload("Pod", pod_spec([BAD], init=[BAD], ephemeral=[GOOD, BAD]))
    body = review(obj, operation="UPDATE", sub_resource="ephemeralcontainers")
    message = refused(answer(body, [rule(allowed_sources=HOST)], with_old=False))
    assert message == (
        f'moorage refused this Pod: rule "r": container "debug1" (ephemeralContainers) image '
        f'"{BAD}" does not come from an allowed source ({HOST})'
    )


def test_ephemeral_containers_already_running_are_not_judged_again() -> None:
    """Adding a debug container to a pod whose earlier debug container a new rule refuses."""
    old = workload("Pod", pod_spec([GOOD], ephemeral=[BAD]))
    new = workload("Pod", pod_spec([GOOD], ephemeral=[BAD, GOOD]))
    body = review(new, operation="UPDATE", sub_resource="ephemeralcontainers", old=old)
    admitted(answer(body, [rule(allowed_sources=HOST)]))


@pytest.mark.parametrize(
    ("operation", "sub_resource"),
    [("UPDATE", "status"), ("UPDATE", "scale"), ("DELETE", None), ("CONNECT", None)],
)
def test_other_subresources_and_operations_are_admitted(
    operation: str, sub_resource: str | None
) -> None:
    obj = workload("Deployment", pod_spec([BAD]))
    body = review(obj, operation=operation, sub_resource=sub_resource)
    assert answer(body, [rule(allowed_sources=HOST)]) == {
        "uid": json.loads(body)["request"]["uid"],
        "allowed": True,
    }


def test_update_judges_only_images_that_changed() -> None:
    old = workload("Deployment", pod_spec([BAD, GOOD], init=[BAD]))
    rules = [rule(allowed_sources=HOST)]
    # Unchanged images (a label edit, finalizer removal...) are not judged again.
    relabelled = workload("Deployment", pod_spec([BAD, GOOD], init=[BAD]))
    relabelled["metadata"]["labels"]["tier"] = "web"
    admitted(answer(review(relabelled, operation="UPDATE", old=old), rules))
    # A changed image, a renamed container and a container moved to another list are.
    changed = workload("Deployment", pod_spec([BAD, "docker.io/library/redis:7"], init=[BAD]))
    changed["spec"]["template"]["spec"]["containers"][0]["name"] = "renamed"
    changed["spec"]["template"]["spec"]["initContainers"][0]["name"] = "c1"
    message = refused(answer(review(changed, operation="UPDATE", old=old), rules))
    assert message == (
        'moorage refused this Deployment: rule "r": container "c1" (initContainers) image '
        f'"{BAD}" does not come from an allowed source ({HOST}); '
        f'rule "r": container "renamed" (containers) image "{BAD}" does not come from an '
        f'allowed source ({HOST}); rule "r": container "c1" (containers) image '
        f'"docker.io/library/redis:7" does not come from an allowed source ({HOST})'
    )


def test_update_without_the_old_object_judges_everything() -> None:
    old = workload("Pod", pod_spec([BAD]))
    body = review(workload("Pod", pod_spec([BAD])), operation="UPDATE", old=old)
    admitted(answer(body, [rule(allowed_sources=HOST)]))
    assert "c0" in refused(answer(body, [rule(allowed_sources=HOST)], with_old=False))


def test_create_ignores_any_old_object() -> None:
    obj = workload("Pod", pod_spec([BAD]))
    body = review(obj, old=obj)  # not sent by the API server, but must not grandfather
    assert "c0" in refused(answer(body, [rule(allowed_sources=HOST)]))


def test_dry_run_gets_the_same_answer() -> None:
    obj = workload("Deployment", pod_spec([BAD, GOOD]))
    rules = [rule(allowed_sources=HOST)]
    wet = answer(review(obj), rules)
    dry = answer(review(obj, dry_run=True), rules)
    assert refused(dry) == refused(wet)


def test_generate_name_objects_are_judged() -> None:
    obj = workload("Pod", pod_spec([BAD]), name=None)
    body = review(obj)
    assert "name" not in json.loads(body)["request"]
    assert refused(answer(body, [rule(allowed_sources=HOST)])).startswith(
        'moorage refused this Pod: rule "r": container "c0" (containers)'
    )


def test_an_unparseable_image_is_refused_with_its_parse_error() -> None:
    rules = [
        rule(name="a", refuse_latest=True),
        rule(name="b", denied_sources="evil.example"),
        rule(name="w", refuse_latest=True, action="warn"),
        rule(name="other", namespaces="staging", refuse_latest=True),
    ]
    response = answer(pod("Nginx:1.25", "nginx:1.25"), rules)
    assert refused(response) == (
        'moorage refused this Pod: rules "a", "b": container "c0" (containers) image '
        "\"Nginx:1.25\" cannot be checked: invalid image reference 'Nginx:1.25': repository "
        "names are lowercase [a-z0-9] components separated by '.', '_', '__' or '-'"
    )
    assert response["warnings"] == [
        'moorage would refuse this: rule "w": container "c0" (containers) image "Nginx:1.25" '
        "cannot be checked: invalid image reference 'Nginx:1.25': repository names are "
        "lowercase [a-z0-9] components separated by '.', '_', '__' or '-'"
    ]


def test_the_message_is_capped() -> None:
    images = [f"docker.io/library/app{i}:1" for i in range(MAX_PROBLEMS + 3)]
    message = refused(answer(pod(*images), [rule(allowed_sources=HOST)]))
    assert message.count("does not come from an allowed source") == MAX_PROBLEMS
    assert message.endswith("; and 3 more problems")
    one_more = [f"docker.io/library/app{i}:1" for i in range(MAX_PROBLEMS + 1)]
    assert refused(answer(pod(*one_more), [rule(allowed_sources=HOST)])).endswith(
        "; and 1 more problem"
    )
    warned = answer(pod(*images), [rule(allowed_sources=HOST, action="warn")])
    assert warned["allowed"] is True
    assert len(warned["warnings"]) == MAX_PROBLEMS + 1
    assert warned["warnings"][-1] == "moorage would refuse this: and 3 more problems"


# --- how rules combine ---


def test_every_matching_rule_applies_and_each_may_refuse() -> None:
    rules: list[dict[str, Any]] = [
        {"name": "prod-sources", "namespaces": "prod*", "allowed_sources": [HOST, "docker.io"]},
        {"name": "baseline", "namespaces": "*", "refuse_latest": True},
        {"name": "staging-only", "namespaces": "staging", "require_digest": True},
        {"name": "no-hub", "namespaces": "*", "except_namespaces": "prod", "denied_sources": "*"},
    ]
    body = pod("quay.io/team/app:1", "nginx", f"{HOST}/team/app:v1")
    assert refused(answer(body, rules)) == (
        'moorage refused this Pod: rule "prod-sources": container "c0" (containers) image '
        f'"quay.io/team/app:1" does not come from an allowed source ({HOST}, docker.io); '
        'rule "baseline": container "c1" (containers) image "nginx" uses the tag "latest" '
        "(no tag means it): name a version, or a digest without a tag (image@sha256:...)"
    )
    # In staging, other rules apply.
    message = refused(answer(body, rules, namespace="staging"))
    assert message.count('rule "staging-only"') == 3
    assert message.count('rule "no-hub"') == 3
    assert message.count('rule "baseline"') == 1
    assert 'rule "prod-sources"' not in message


def test_each_rule_reports_its_own_problem_with_the_same_image() -> None:
    rules: list[dict[str, Any]] = [
        {"name": "sources", "namespaces": "*", "allowed_sources": HOST},
        {"name": "pinned", "namespaces": "prod", "require_digest": True},
    ]
    assert refused(answer(pod("nginx:1.25"), rules)) == (
        'moorage refused this Pod: rule "sources": container "c0" (containers) image '
        '"nginx:1.25" does not come from an allowed source (that is docker.io/library/nginx) '
        f'({HOST}); rule "pinned": container "c0" (containers) image "nginx:1.25" does not '
        "name a digest (write it as image@sha256:...)"
    )


def test_a_namespace_no_rule_covers_is_admitted() -> None:
    rules = [{"name": "prod", "namespaces": "prod", "require_digest": True}]
    admitted(answer(pod("nginx"), rules, namespace="dev"))
    admitted(answer(pod("nginx"), []))


def test_warn_rules_admit_with_warnings() -> None:
    rules = [rule(name="soon", allowed_sources=HOST, action="warn")]
    response = answer(pod(BAD, GOOD), rules)
    assert response["allowed"] is True and "status" not in response
    assert response["warnings"] == [
        f'moorage would refuse this: rule "soon": container "c0" (containers) image "{BAD}" '
        f"does not come from an allowed source ({HOST})"
    ]


def test_deny_and_warn_rules_together() -> None:
    rules = [
        rule(name="soon", allowed_sources=HOST, action="warn"),
        rule(name="now", refuse_latest=True),
    ]
    response = answer(pod(BAD, f"{HOST}/team/app"), rules)
    assert refused(response) == (
        'moorage refused this Pod: rule "now": container "c1" (containers) image '
        f'"{HOST}/team/app" uses the tag "latest" (no tag means it): name a version, or a '
        "digest without a tag (image@sha256:...)"
    )
    assert len(response["warnings"]) == 1 and 'rule "soon"' in response["warnings"][0]


@pytest.mark.parametrize(
    ("namespaces", "except_namespaces", "namespace", "applies"),
    [
        ("prod", [], "prod", True),
        ("prod", [], "prod-eu", False),
        ("prod", [], "preprod", False),
        (["prod", "prod-*"], [], "prod-eu", True),
        ("prod-*", [], "prod", False),
        ("team-?", [], "team-a", True),
        ("team-?", [], "team-ab", False),
        ("*", [], "anything", True),
        ("*", ["kube-*", "moorage"], "kube-system", False),
        ("*", ["kube-*", "moorage"], "moorage", False),
        ("*", ["kube-*", "moorage"], "default", True),
        ("regex:(eu|us)-prod", [], "us-prod", True),
        ("regex:(eu|us)-prod", [], "us-prod-2", False),
    ],
)
def test_namespace_matching(
    namespaces: Any, except_namespaces: list[str], namespace: str, applies: bool
) -> None:
    doc = {
        "name": "r",
        "namespaces": namespaces,
        "except_namespaces": except_namespaces,
        "require_digest": True,
    }
    assert ValidationRule.from_dict(doc).applies_to(namespace) is applies
    response = answer(pod("nginx:1.25"), [doc], namespace=namespace)
    assert response["allowed"] is not applies


# --- the tag policy callable ---


def test_tag_mode_is_asked_once_per_image_and_only_when_needed() -> None:
    asked: list[str] = []

    def tag_mode(reference: ImageReference) -> Decision | None:
        asked.append(str(reference))
        return TAG_MODE(reference)

    rules = [
        rule(name="a", refuse_mutable_tags=True, namespaces="prod"),
        rule(name="b", refuse_mutable_tags=True, namespaces="prod"),
        rule(name="c", require_digest=True, refuse_mutable_tags=True, namespaces="staging"),
    ]
    body = pod(f"{HOST}/team/app:today", f"{HOST}/team/app:today", f"nginx@{DIGEST}", "nginx:1")
    message = refused(answer(body, rules, tag_mode=tag_mode))
    assert asked == [f"{HOST}/team/app:today", "docker.io/library/nginx:1"]
    assert message.count("which is mutable") == 4
    assert message.count("which no tag policy") == 2
    asked.clear()
    refused(answer(body, rules, tag_mode=tag_mode, namespace="staging"))
    assert asked == []  # require_digest already refuses every tag-only image
    admitted(answer(pod(f"nginx@{DIGEST}"), rules, tag_mode=tag_mode))
    assert asked == []


def test_local_tag_mode() -> None:
    assert TAG_MODE(parse_reference("nginx:1.25")) is None
    assert TAG_MODE(parse_reference("registry.internal/team/app:v1")) is None
    decision = TAG_MODE(parse_reference("Registry.Internal:5000/team/app:v1.0"))
    assert decision is not None and decision.immutable
    assert decision.rule is not None and decision.rule.name == "releases"
    decision = TAG_MODE(parse_reference(f"{HOST}/dev/app:v1.0"))
    assert decision is not None and not decision.immutable


# --- rule documents ---

TOML_EXAMPLE = """
[admission.validation]

[[admission.validation.rules]]
name = "prod-sources"
namespaces = ["prod", "prod-*"]
except_namespaces = ["prod-sandbox"]
allowed_sources = ["registry.internal:5000", "docker.io/library/*"]
denied_sources = ["docker.io/library/ubuntu"]
refuse_mutable_tags = true
refuse_latest = true
description = "production runs our builds and official images only"

[[admission.validation.rules]]
name = "everywhere"
namespaces = "*"
except_namespaces = ["kube-system"]
denied_sources = ["evil.example.com", "regex:.*/cryptominer.*"]
require_digest = false
refuse_latest = true
action = "warn"
"""


def test_the_documented_toml_shape() -> None:
    table = tomllib.loads(TOML_EXAMPLE)
    rules = parse_rules(table["admission"]["validation"]["rules"])
    assert [r.name for r in rules] == ["prod-sources", "everywhere"]
    prod, everywhere = rules
    assert prod.applies_to("prod-eu") and not prod.applies_to("prod-sandbox")
    assert everywhere.action == "warn" and everywhere.refuse_latest
    assert [r.to_dict() for r in parse_rules([r.to_dict() for r in rules])] == [
        r.to_dict() for r in rules
    ]
    assert prod.to_dict() == {k: v for k, v in table["admission"]["validation"]["rules"][0].items()}
    assert everywhere.to_dict() == {
        "name": "everywhere",
        "namespaces": ["*"],
        "except_namespaces": ["kube-system"],
        "denied_sources": ["evil.example.com", "regex:.*/cryptominer.*"],
        "refuse_latest": True,
        "action": "warn",
    }


def test_parse_rules_accepts_nothing() -> None:
    assert parse_rules(None) == ()
    assert parse_rules([]) == ()


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("prod", "validation rules: [0]: expected a table/object, not 'prod'"),
        (
            {"name": "r", "namespaces": "*", "refuse_latest": True, "mode": "deny"},
            "validation rule 'r': mode: unknown key (known: action, ",
        ),
        ({"namespaces": "*", "refuse_latest": True}, "validation rules: [0].name: missing"),
        (
            {"name": "", "namespaces": "*", "refuse_latest": True},
            "[0].name: must be a non-empty string without outer spaces",
        ),
        (
            {"name": " r", "namespaces": "*", "refuse_latest": True},
            "validation rule ' r': name: must be a non-empty string without outer spaces",
        ),
        ({"name": 3, "namespaces": "*", "refuse_latest": True}, "[0].name: expected a string"),
        (
            {"name": "r", "refuse_latest": True},
            "validation rule 'r': namespaces: missing (write \"*\" for every namespace)",
        ),
        (
            {"name": "r", "namespaces": [], "refuse_latest": True},
            "validation rule 'r': namespaces: must not be empty",
        ),
        (
            {"name": "r", "namespaces": ["a", ""], "refuse_latest": True},
            "validation rule 'r': namespaces[1]: must not be empty",
        ),
        (
            {"name": "r", "namespaces": {"a": 1}, "refuse_latest": True},
            "validation rule 'r': namespaces: expected a string or a list, not a table/object",
        ),
        (
            {"name": "r", "namespaces": "Prod", "refuse_latest": True},
            "validation rule 'r': namespaces: 'Prod' is not a namespace pattern",
        ),
        (
            {"name": "prod", "namespaces": ["prod", "prod-*", "Prod"], "refuse_latest": True},
            "validation rule 'prod': namespaces[2]: 'Prod' is not a namespace pattern",
        ),
        (
            {"name": "r", "namespaces": "team/a", "refuse_latest": True},
            "'team/a' is not a namespace pattern",
        ),
        (
            {"name": "r", "namespaces": "regex:(", "refuse_latest": True},
            "validation rule 'r': namespaces: invalid pattern 'regex:('",
        ),
        (
            {"name": "r", "namespaces": "*", "except_namespaces": 5, "refuse_latest": True},
            "validation rule 'r': except_namespaces: expected a string or a list, not 5",
        ),
        (
            {"name": "r", "namespaces": "*"},
            "validation rule 'r': checks nothing: set one of allowed_sources, denied_sources, "
            "require_digest, refuse_mutable_tags, refuse_latest",
        ),
        (
            {"name": "r", "namespaces": "*", "refuse_latest": False},
            "validation rule 'r': checks nothing",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": []},
            "validation rule 'r': allowed_sources: empty, which would refuse every image: "
            "leave it out to allow any source",
        ),
        (
            {"name": "r", "namespaces": "*", "denied_sources": []},
            "validation rule 'r': denied_sources: empty",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": ["docker.io/library/nginx:1.25"]},
            "validation rule 'r': allowed_sources[0]: 'docker.io/library/nginx:1.25' is not a "
            "source: sources name repositories, not tags",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": [f"nginx@{DIGEST}"]},
            "sources name repositories, not digests",
        ),
        (
            {"name": "r", "namespaces": "*", "denied_sources": ["docker.io/*"]},
            "validation rule 'r': denied_sources[0]: 'docker.io/*' is ambiguous: Docker Hub names "
            "have two components (nginx is docker.io/library/nginx); write "
            "'docker.io/library/*' for official images or 'docker.io' for all of Docker Hub",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": [f"{HOST}/"]},
            "'registry.internal:5000/' ends with '/': write 'registry.internal:5000' for every",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": [f"{HOST}//app"]},
            "'registry.internal:5000//app' is not a repository pattern",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": [f"{HOST}/Team/app"]},
            "is not a repository pattern (paths are lowercase",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": ["/app"]},
            "'/app' does not start with a registry host",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": ["my registry/app"]},
            "sources name repositories",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": ["regex:[a-"]},
            "validation rule 'r': allowed_sources[0]: invalid pattern 'regex:[a-'",
        ),
        (
            {"name": "r", "namespaces": "*", "allowed_sources": 5},
            "validation rule 'r': allowed_sources: expected a string or a list, not 5",
        ),
        (
            {"name": "r", "namespaces": "*", "require_digest": "yes"},
            "validation rule 'r': require_digest: expected true or false, not 'yes'",
        ),
        (
            {"name": "r", "namespaces": "*", "refuse_latest": 1},
            "validation rule 'r': refuse_latest: expected true or false, not 1",
        ),
        (
            {"name": "r", "namespaces": "*", "refuse_mutable_tags": None},
            "validation rule 'r': refuse_mutable_tags: expected true or false, not null",
        ),
        (
            {"name": "r", "namespaces": "*", "refuse_latest": True, "action": "block"},
            "validation rule 'r': action: expected 'deny' or 'warn', not 'block'",
        ),
        (
            {"name": "r", "namespaces": "*", "refuse_latest": True, "description": 3},
            "validation rule 'r': description: expected a string, not 3",
        ),
    ],
)
def test_invalid_rules(document: Any, error: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_rules([document])
    assert str(caught.value).startswith("validation rules: ")
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("documents", "error"),
    [
        ({"name": "r"}, "validation rules: expected a list, not a table/object"),
        ("r", "validation rules: expected a list, not 'r'"),
        (
            [rule(name="a", refuse_latest=True), rule(name="a", require_digest=True)],
            "validation rules: validation rule names must be unique: a",
        ),
        (
            [rule(name="a", refuse_latest=True), {"name": "b", "namespaces": "*"}],
            "validation rules: validation rule 'b': checks nothing",
        ),
        (
            [rule(refuse_latest=True), "x"],
            "validation rules: [1]: expected a table/object, not 'x'",
        ),
    ],
)
def test_invalid_rule_lists(documents: Any, error: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_rules(documents)
    assert error in str(caught.value)


def test_rule_errors_name_their_source_key_and_problem() -> None:
    rules = [rule(name="ok", refuse_latest=True), {"name": "r", "namespaces": ["a", "B"]}]
    with pytest.raises(DocumentError) as caught:
        parse_rules(rules, "the rules sent by a test")
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.source, error.key) == (
        "the rules sent by a test",
        "validation rule 'r': namespaces[1]",
    )
    assert error.problem.startswith("'B' is not a namespace pattern")
    assert str(error) == f"{error.source}: {error.key}: {error.problem}"
