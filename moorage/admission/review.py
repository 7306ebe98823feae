"""AdmissionReview ``admission.k8s.io/v1``: reading requests and writing responses."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "admission.k8s.io/v1"


class ReviewError(ValueError):
    """A body that is not an AdmissionReview v1 request; answered with 400."""


@dataclass(frozen=True)
class AdmissionRequest:
    uid: str
    kind: str
    group: str
    resource: str
    sub_resource: str
    operation: str
    namespace: str
    name: str
    object: Mapping[str, Any]
    dry_run: bool
    user: str
    #: The object before an UPDATE (empty otherwise).
    old_object: Mapping[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """The object's name, or its generateName prefix while the API server has not named it."""
        if self.name:
            return self.name
        metadata = self.object.get("metadata")
        generate = metadata.get("generateName") if isinstance(metadata, Mapping) else None
        return f"{generate}*" if isinstance(generate, str) and generate else "(unnamed)"


def _text(value: Any, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{where} must be a string")
    return value


def parse_review(body: bytes) -> AdmissionRequest:
    try:
        review = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ReviewError(f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(review, dict):
        raise ReviewError("body must be a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise ReviewError(f"expected an AdmissionReview of apiVersion {API_VERSION}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request")
    kind = request.get("kind")
    resource = request.get("resource")
    if not isinstance(kind, dict) or not isinstance(resource, dict):
        raise ReviewError("request.kind and request.resource must be objects")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise ReviewError("request.object must be an object")
    old = request.get("oldObject")
    if old is not None and not isinstance(old, dict):
        raise ReviewError("request.oldObject must be an object")
    user_info = request.get("userInfo")
    user = user_info.get("username") if isinstance(user_info, dict) else None
    return AdmissionRequest(
        uid=_text(request.get("uid"), "request.uid", required=True),
        kind=_text(kind.get("kind"), "request.kind.kind", required=True),
        group=_text(kind.get("group"), "request.kind.group"),
        resource=_text(resource.get("resource"), "request.resource.resource", required=True),
        sub_resource=_text(request.get("subResource"), "request.subResource"),
        operation=_text(request.get("operation"), "request.operation", required=True),
        namespace=_text(request.get("namespace"), "request.namespace"),
        name=_text(request.get("name"), "request.name"),
        object=obj or {},
        dry_run=request.get("dryRun") is True,
        user=user if isinstance(user, str) else "",
        old_object=old or {},
    )


@dataclass
class AdmissionResponse:
    uid: str
    allowed: bool = True
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    message: str = ""
    code: int = 403

    def to_review(self) -> dict[str, Any]:
        response: dict[str, Any] = {"uid": self.uid, "allowed": self.allowed}
        if self.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(self.patch).encode()).decode()
        if self.warnings:
            response["warnings"] = self.warnings
        if not self.allowed:
            response["status"] = {"code": self.code, "message": self.message}
        return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
