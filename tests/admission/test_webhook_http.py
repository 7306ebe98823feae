"""The admission webhooks over HTTP (moorage.api.webhook), in process: the aiohttp app of
``create_webhook_app(build_admission(settings, registry))`` on a real registry (filesystem
storage, SQLite) whose images are pushed through the registry's own API (``create_app``).

What the API server relies on: every body that is not an AdmissionReview v1 request gets a 400
with a JSON error (a too large one 413), never a crash; a review gets an AdmissionReview
response of the exact shape (``uid`` echoed, a base64 ``JSONPatch``, ``warnings``, ``status``
on refusals); dry runs record nothing; what /mutate pinned is listed by
``GET /v2/_moorage/pins``.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from moorage.admission.review import API_VERSION
from moorage.admission.setup import Admission, build_admission
from moorage.api.app import create_app
from moorage.api.health import webhook_readiness
from moorage.api.webhook import MAX_REVIEW, create_webhook_app
from moorage.registry.service import Registry
from moorage.server import build_registry
from tests.admission.reviews import apply_patch, decoded_patch, pod_spec, review, workload
from tests.support.app import push_image
from tests.support.images import seeded_image
from tests.support.metrics import Scrape, sample
from tests.support.settings import make_settings

HOST = "127.0.0.1:5000"  # the registry's listen address: resolved locally
ALIAS = "registry.test"  # admission.registry_hosts: resolved locally too
APP = f"{HOST}/team/app:today"
SIDE = f"{ALIAS}/team/sidecar:1.0"
MISSING = f"{HOST}/team/missing:1.0"

AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


@dataclass
class Env:
    registry: Registry
    admission: Admission
    api: Client
    hooks: Client
    digests: dict[str, str]

    async def push(self, repository: str, tag: str, seed: str) -> str:
        """Push ``seeded_image(seed)`` through the registry API; the manifest's digest."""
        return (await push_image(self.api, repository, seeded_image(seed, layers=1), tag)).digest

    async def post(self, path: str, body: bytes, **headers: str) -> tuple[int, Any]:
        # aiohttp warns about large bytes bodies (and warnings are errors here): stream them.
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > 1 << 20 else body
        response = await self.hooks.post(
            path, data=data, headers={"Content-Type": "application/json", **headers}
        )
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()

    async def answer(self, path: str, body: bytes) -> dict[str, Any]:
        """The ``response`` of the AdmissionReview answered to ``body`` (checked: 200, the
        envelope, and the uid echoed)."""
        status, document = await self.post(path, body)
        assert status == 200, document
        assert set(document) == {"apiVersion", "kind", "response"}
        assert document["apiVersion"] == API_VERSION
        assert document["kind"] == "AdmissionReview"
        response: dict[str, Any] = document["response"]
        assert response["uid"] == json.loads(body)["request"]["uid"]
        return response

    async def pins(self, **query: str) -> list[dict[str, Any]]:
        await self.admission.pinner.drain()  # pins are recorded in the background
        response = await self.api.get("/v2/_moorage/pins", params=query)
        assert response.status == 200, await response.text()
        pins: list[dict[str, Any]] = (await response.json())["pins"]
        return pins


Make = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(tmp_path: Path, aiohttp_client: AiohttpClient) -> Make:
    """An Env over a fresh registry; keyword arguments are config file tables and keys."""
    count = 0

    async def make(**tables: Any) -> Env:
        nonlocal count
        count += 1
        defaults: dict[str, Any] = {
            "data": tmp_path / f"data{count}",
            "workers": 1,
            "listen": HOST,
            "admission": {"registry_hosts": [ALIAS], "kubernetes": "off"},
        }
        settings = make_settings(defaults, tables)
        registry = build_registry(settings)
        admission = build_admission(settings, registry)
        # Made first, closed last: the registry app closes the registry on cleanup, after the
        # webhook app has drained the pins still being recorded.
        api = await aiohttp_client(create_app(registry, settings))
        hooks = await aiohttp_client(
            create_webhook_app(admission, readiness=webhook_readiness(registry))
        )
        env = Env(registry, admission, api, hooks, {})
        env.digests[APP] = await env.push("team/app", "today", "app-1")
        env.digests[SIDE] = await env.push("team/sidecar", "1.0", "side-1")
        return env

    return make


@pytest.fixture
async def env(make_env: Make) -> Env:
    return await make_env()


def envelope(request: dict[str, Any]) -> bytes:
    return json.dumps(
        {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}
    ).encode()


def valid_request() -> dict[str, Any]:
    request: dict[str, Any] = json.loads(review(workload("Pod", pod_spec([APP]))))["request"]
    return request


def without(key: str) -> bytes:
    request = valid_request()
    del request[key]
    return envelope(request)


def with_field(key: str, value: Any) -> bytes:
    request = valid_request()
    request[key] = value
    return envelope(request)


# -- bodies that are not AdmissionReview v1 requests -----------------------------------------------

MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "AdmissionReview: not valid JSON ("),
    ("not JSON", b"{'apiVersion': 'admission.k8s.io/v1'", "AdmissionReview: not valid JSON ("),
    ("not UTF-8", b'{"kind": "\xff\xfe"}', "AdmissionReview: not valid JSON ("),
    ("too deep", b"[" * 100_000 + b"]" * 100_000, "AdmissionReview: not valid JSON ("),
    ("huge integer", b'{"n": ' + b"9" * 5000 + b"}", "AdmissionReview: not valid JSON ("),
    ("JSON array", b"[]", "AdmissionReview: expected a table/object, not a list"),
    ("JSON string", b'"AdmissionReview"', "AdmissionReview: expected a table/object, not 'Adm"),
    ("JSON null", b"null", "AdmissionReview: expected a table/object, not null"),
    (
        "v1beta1",
        json.dumps(
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}
        ).encode(),
        f"AdmissionReview: apiVersion: expected '{API_VERSION}', not 'admission.k8s.io/v1beta1'",
    ),
    (
        "wrong kind",
        json.dumps({"apiVersion": API_VERSION, "kind": "TokenReview", "request": {}}).encode(),
        "AdmissionReview: kind: expected 'AdmissionReview', not 'TokenReview'",
    ),
    (
        "no apiVersion",
        json.dumps({"kind": "AdmissionReview", "request": {}}).encode(),
        "AdmissionReview: apiVersion: missing",
    ),
    (
        "a response, not a request",
        json.dumps(
            {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": "x"}}
        ).encode(),
        "AdmissionReview: request: missing",
    ),
    (
        "request is a list",
        json.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": []}).encode(),
        "AdmissionReview: request: expected a table/object, not a list",
    ),
    ("no uid", without("uid"), "AdmissionReview: request.uid: missing"),
    (
        "uid is a number",
        with_field("uid", 42),
        "AdmissionReview: request.uid: expected a string, not 42",
    ),
    ("no kind", without("kind"), "AdmissionReview: request.kind: missing"),
    (
        "kind is a string",
        with_field("kind", "Pod"),
        "AdmissionReview: request.kind: expected a table/object, not 'Pod'",
    ),
    ("no resource", without("resource"), "AdmissionReview: request.resource: missing"),
    (
        "no kind.kind",
        with_field("kind", {"group": "", "version": "v1"}),
        "AdmissionReview: request.kind.kind: missing",
    ),
    ("no operation", without("operation"), "AdmissionReview: request.operation: missing"),
    (
        "namespace not a string",
        with_field("namespace", ["prod"]),
        "AdmissionReview: request.namespace: expected a string, not a list",
    ),
    (
        "object is a list",
        with_field("object", [{"kind": "Pod"}]),
        "AdmissionReview: request.object: expected a table/object, not a list",
    ),
    (
        "object is a string",
        with_field("object", "{}"),
        "AdmissionReview: request.object: expected a table/object, not '{}'",
    ),
    (
        "oldObject is a number",
        with_field("oldObject", 1),
        "AdmissionReview: request.oldObject: expected a table/object, not 1",
    ),
]


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
@pytest.mark.parametrize(
    ("body", "message"), [(b, m) for _, b, m in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
async def test_malformed_bodies_get_a_400_json_error(
    env: Env, path: str, body: bytes, message: str
) -> None:
    status, document = await env.post(path, body)
    assert status == 400, document
    assert set(document) == {"error"}
    assert document["error"].startswith(message), document
    assert len(document["error"]) < 400  # a clear message, not an echo of the body


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
async def test_a_body_over_the_limit_gets_a_413(env: Env, path: str) -> None:
    obj = workload("Pod", pod_spec([APP]))
    obj["metadata"]["annotations"] = {"padding": "x" * MAX_REVIEW}
    status, document = await env.post(path, review(obj))
    assert status == 413
    assert document == {"error": f"body larger than {MAX_REVIEW} bytes"}
    # The webhook still answers afterwards.
    response = await env.answer(path, review(workload("Pod", pod_spec([APP]))))
    assert response["allowed"] is True


async def test_other_methods_and_paths(env: Env) -> None:
    response = await env.hooks.get("/mutate")
    assert response.status == 405
    response = await env.hooks.post("/v2/", data=b"{}")
    assert response.status == 404
    response = await env.hooks.post("/mutate/", data=b"{}")
    assert response.status == 404


async def test_healthz(env: Env) -> None:
    response = await env.hooks.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok"


async def test_probes_and_metrics(env: Env) -> None:
    response = await env.hooks.get("/livez")
    assert response.status == 200 and await response.text() == "ok"
    response = await env.hooks.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "checks": {"metadata": "ok"}}
    await env.answer("/mutate", review(workload("Pod", pod_spec([APP]))))
    response = await env.hooks.get("/metrics")
    assert response.status == 200
    scraped = Scrape.parse(await response.text())
    assert scraped.value("moorage_admission_reviews_total", webhook="mutate", outcome="patched")


async def test_reviews_are_counted_by_webhook_and_outcome(
    make_env: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await make_env(admission={"validation": {"rules": RULES}})

    def counts() -> dict[tuple[str, str], float]:
        return {
            (webhook, outcome): sample(
                "moorage_admission_reviews_total", webhook=webhook, outcome=outcome
            )
            for webhook in ("mutate", "validate")
            for outcome in ("allowed", "patched", "denied", "error")
        } | {
            (webhook, "timed"): sample(
                "moorage_admission_review_duration_seconds_count", webhook=webhook
            )
            for webhook in ("mutate", "validate")
        }

    before = counts()
    obj = workload("Deployment", pod_spec([APP]))
    pinned = apply_patch(obj, decoded_patch(await env.answer("/mutate", review(obj))))
    assert (await env.answer("/mutate", review(pinned)))["allowed"] is True  # nothing to do
    assert (await env.answer("/mutate", review(workload("Pod", pod_spec([MISSING])))))[
        "allowed"
    ] is False
    assert (await env.answer("/validate", review(pinned)))["allowed"] is True
    assert (await env.answer("/validate", review(obj)))["allowed"] is False  # no digest
    assert (await env.post("/validate", b"{}"))[0] == 400

    async def broken() -> Any:
        raise RuntimeError("metadata store on fire")

    monkeypatch.setattr(env.registry.policies, "current", broken)
    assert (await env.answer("/validate", review(pinned)))["status"]["code"] == 500
    after = counts()
    moved = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert moved == {
        ("mutate", "patched"): 1,
        ("mutate", "allowed"): 1,
        ("mutate", "denied"): 1,
        ("mutate", "timed"): 3,
        ("validate", "allowed"): 1,
        ("validate", "denied"): 1,
        ("validate", "error"): 2,
        ("validate", "timed"): 4,
    }


async def test_odd_object_shapes_are_admitted_untouched(env: Env) -> None:
    """Objects the API server would never send still get an answer, never a crash."""
    shapes: list[Any] = [
        {},
        {"spec": "nope"},
        {"spec": {"template": {"spec": {"containers": "c0"}}}},
        {"spec": {"template": {"spec": {"containers": [None, 1, "x", {"image": 5}, {}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"name": 1, "image": ""}]}}}},
        {"metadata": "web", "spec": {"template": None}},
    ]
    for shape in shapes:
        for path in ("/mutate", "/validate"):
            body = review({"kind": "Deployment", "metadata": {"name": "web"}})
            document = json.loads(body)
            document["request"]["object"] = shape
            response = await env.answer(path, json.dumps(document).encode())
            assert response == {"uid": document["request"]["uid"], "allowed": True}, shape


async def test_kinds_without_containers_are_admitted_untouched(env: Env) -> None:
    body = json.loads(review(workload("Pod", pod_spec([APP]))))
    body["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    body["request"]["resource"] = {"group": "", "version": "v1", "resource": "configmaps"}
    body["request"]["object"] = {"kind": "ConfigMap", "data": {"image": APP}}
    response = await env.answer("/mutate", json.dumps(body).encode())
    assert response == {"uid": body["request"]["uid"], "allowed": True}


# -- /mutate ---------------------------------------------------------------------------------------


async def test_mutate_answers_with_a_jsonpatch_pinning_every_image(env: Env) -> None:
    obj = workload("Deployment", pod_spec([APP, SIDE], init=[SIDE]))
    response = await env.answer("/mutate", review(obj))
    assert set(response) == {"uid", "allowed", "patchType", "patch"}
    assert response["allowed"] is True
    prefix = "/spec/template/spec"
    assert decoded_patch(response) == [
        {
            "op": "replace",
            "path": f"{prefix}/initContainers/0/image",
            "value": f"{SIDE}@{env.digests[SIDE]}",
        },
        {
            "op": "replace",
            "path": f"{prefix}/containers/0/image",
            "value": f"{APP}@{env.digests[APP]}",
        },
        {
            "op": "replace",
            "path": f"{prefix}/containers/1/image",
            "value": f"{SIDE}@{env.digests[SIDE]}",
        },
    ]
    pinned = apply_patch(obj, decoded_patch(response))
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"].endswith(env.digests[APP])


async def test_reinvocation_on_the_pinned_object_needs_no_patch(env: Env) -> None:
    obj = workload("Deployment", pod_spec([APP, SIDE]))
    first = await env.answer("/mutate", review(obj))
    pinned = apply_patch(obj, decoded_patch(first))
    again = await env.answer("/mutate", review(pinned))
    assert set(again) == {"uid", "allowed"}
    assert again["allowed"] is True
    update = await env.answer("/mutate", review(pinned, operation="UPDATE", old=pinned))
    assert set(update) == {"uid", "allowed"}


async def test_a_moved_tag_pins_new_objects_only(env: Env) -> None:
    obj = workload("Deployment", pod_spec([APP]))
    first = decoded_patch(await env.answer("/mutate", review(obj)))
    assert first[0]["value"] == f"{APP}@{env.digests[APP]}"
    moved = await env.push("team/app", "today", "app-2")
    assert moved != env.digests[APP]
    pod = await env.answer("/mutate", review(workload("Pod", pod_spec([APP]), name=None)))
    assert decoded_patch(pod) == [
        {"op": "replace", "path": "/spec/containers/0/image", "value": f"{APP}@{moved}"}
    ]
    # The Deployment pinned before keeps its digest when it is sent again.
    pinned = apply_patch(obj, first)
    update = await env.answer("/mutate", review(pinned, operation="UPDATE", old=pinned))
    assert "patch" not in update


async def test_unresolvable_images_are_refused_by_default(env: Env) -> None:
    body = review(workload("Deployment", pod_spec([APP, MISSING])))
    response = await env.answer("/mutate", body)
    assert set(response) == {"uid", "allowed", "status"}
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith("moorage could not pin every image to a digest")
    assert f'container "c1" (containers) image "{MISSING}"' in message
    assert f"{MISSING} is not in this registry" in message
    assert APP not in message
    assert await env.pins() == []


async def test_unparseable_images_are_refused_with_the_reason(env: Env) -> None:
    response = await env.answer("/mutate", review(workload("Pod", pod_spec(["Team/App:1"]))))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert 'container "c0" (containers) image "Team/App:1": invalid image reference' in message


async def test_warn_mode_admits_with_warnings_and_pins_the_rest(make_env: Make) -> None:
    env = await make_env(admission={"on_failure": "warn"})
    body = review(workload("Deployment", pod_spec([APP, MISSING])))
    response = await env.answer("/mutate", body)
    assert set(response) == {"uid", "allowed", "patchType", "patch", "warnings"}
    assert response["allowed"] is True
    assert response["warnings"] == [
        f'not pinned: container "c1" (containers) image "{MISSING}": '
        f"{MISSING} is not in this registry"
    ]
    assert decoded_patch(response) == [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": f"{APP}@{env.digests[APP]}",
        }
    ]
    # Nothing resolvable at all: admitted with the warning and no patch.
    alone = await env.answer("/mutate", review(workload("Pod", pod_spec([MISSING]))))
    assert set(alone) == {"uid", "allowed", "warnings"}


async def test_images_of_other_registries_without_remote_resolution(make_env: Make) -> None:
    env = await make_env(admission={"remote": False})
    response = await env.answer("/mutate", review(workload("Pod", pod_spec(["nginx:1.25"]))))
    assert response["allowed"] is False
    assert (
        "docker.io is not this registry and resolving other registries is turned off"
        in response["status"]["message"]
    )


async def test_pins_are_listed_by_the_registry_api(env: Env) -> None:
    body = review(workload("Deployment", pod_spec([APP, SIDE])))
    await env.answer("/mutate", body)
    uid = json.loads(body)["request"]["uid"]
    pins = await env.pins()
    assert len(pins) == 2
    by_container = {p["container"]: p for p in pins}
    app, side = by_container["c0"], by_container["c1"]
    assert {k: app[k] for k in app if k not in ("id", "time")} == {
        "namespace": "prod",
        "kind": "Deployment",
        "name": "web",
        "container": "c0",
        "container_kind": "containers",
        "image": APP,
        "repository": f"{HOST}/team/app",
        "tag": "today",
        "digest": env.digests[APP],
        "source": "local",
        "user": "alice@example.com",
        "request_uid": uid,
    }
    assert side["digest"] == env.digests[SIDE]
    assert side["repository"] == f"{ALIAS}/team/sidecar"
    # Filters: by image (as workloads write it) and by namespace.
    assert [p["container"] for p in await env.pins(image=SIDE)] == ["c1"]
    assert [p["container"] for p in await env.pins(image=APP)] == ["c0"]
    assert await env.pins(namespace="dev") == []
    assert len(await env.pins(namespace="prod")) == 2


async def test_generate_name_objects_are_recorded_by_prefix(env: Env) -> None:
    await env.answer("/mutate", review(workload("Pod", pod_spec([APP]), name=None)))
    (pin,) = await env.pins()
    assert (pin["kind"], pin["name"]) == ("Pod", "web-*")


async def test_dry_run_patches_but_records_no_pins(env: Env) -> None:
    obj = workload("Deployment", pod_spec([APP]))
    dry = await env.answer("/mutate", review(obj, dry_run=True))
    wet_body = review(obj)
    wet = await env.answer("/mutate", wet_body)
    assert decoded_patch(dry) == decoded_patch(wet)
    pins = await env.pins()
    assert [p["request_uid"] for p in pins] == [json.loads(wet_body)["request"]["uid"]]


async def test_concurrent_reviews_each_get_their_own_answer(env: Env) -> None:
    bodies = [review(workload("Pod", pod_spec([APP, SIDE]), name=f"p{i}")) for i in range(40)]
    answers = await asyncio.gather(*(env.answer("/mutate", body) for body in bodies))
    for body, response in zip(bodies, answers, strict=True):
        assert response["uid"] == json.loads(body)["request"]["uid"]
        assert len(decoded_patch(response)) == 2
    assert len(await env.pins(n="1000")) == 80


# -- /validate -------------------------------------------------------------------------------------

RULES = [
    {"name": "prod-digests", "namespaces": "prod", "require_digest": True},
    {"name": "no-hub", "namespaces": "*", "denied_sources": ["docker.io"], "action": "warn"},
]


async def test_validate_refuses_with_the_exact_shape(make_env: Make) -> None:
    env = await make_env(admission={"validation": {"rules": RULES}})
    response = await env.answer("/validate", review(workload("Deployment", pod_spec([APP]))))
    assert set(response) == {"uid", "allowed", "status"}
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 403,
        "message": (
            f'moorage refused this Deployment: rule "prod-digests": container "c0" (containers) '
            f'image "{APP}" does not name a digest (write it as image@sha256:...)'
        ),
    }


async def test_validate_admits_what_mutate_pinned(make_env: Make) -> None:
    env = await make_env(admission={"validation": {"rules": RULES}})
    obj = workload("Deployment", pod_spec([APP]))
    pinned = apply_patch(obj, decoded_patch(await env.answer("/mutate", review(obj))))
    response = await env.answer("/validate", review(pinned))
    assert response == {"uid": response["uid"], "allowed": True}


async def test_validate_warns(make_env: Make) -> None:
    env = await make_env(admission={"validation": {"rules": RULES}})
    image = f"nginx@sha256:{'a' * 64}"
    response = await env.answer("/validate", review(workload("Pod", pod_spec([image]))))
    assert set(response) == {"uid", "allowed", "warnings"}
    assert response["allowed"] is True
    assert response["warnings"] == [
        f'moorage would refuse this: rule "no-hub": container "c0" (containers) image "{image}" '
        "comes from a denied source (that is docker.io/library/nginx) (docker.io)"
    ]


async def test_an_internal_failure_is_a_refusal_explaining_it(
    make_env: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await make_env(admission={"validation": {"rules": RULES}})

    async def broken() -> Any:
        raise RuntimeError("metadata store on fire")

    monkeypatch.setattr(env.registry.policies, "current", broken)
    body = review(workload("Pod", pod_spec([APP])))
    response = await env.answer("/validate", body)
    assert response == {
        "uid": json.loads(body)["request"]["uid"],
        "allowed": False,
        "status": {
            "code": 500,
            "message": "moorage failed to review this object; see the webhook's log",
        },
    }
    # /mutate does not read the policy for this registry's own images: it still pins.
    assert (await env.answer("/mutate", body))["allowed"] is True


async def test_uid_is_echoed_whatever_it_is(env: Env) -> None:
    for uid in ("", "x" * 300, "ünïcødé", str(uuid.uuid4())):
        body = json.loads(review(workload("Pod", pod_spec([APP]))))
        body["request"]["uid"] = uid
        for path in ("/mutate", "/validate"):
            response = await env.answer(path, json.dumps(body).encode())
            assert response["uid"] == uid


async def test_an_ipv6_listen_address_is_one_of_this_registrys_hosts(make_env: Make) -> None:
    env = await make_env(listen="[fd00::5]:5000", admission={"remote": False})
    image = "[fd00::5]:5000/team/app:today"
    response = await env.answer("/mutate", review(workload("Pod", pod_spec([image]))))
    assert response["allowed"] is True, response
    assert decoded_patch(response)[0]["value"] == f"{image}@{env.digests[APP]}"
