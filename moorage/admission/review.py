"""AdmissionReview ``admission.k8s.io/v1``: reading requests and writing responses."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from moorage.documents import key, parse_json, read

API_VERSION = "admission.k8s.io/v1"
#: How messages name the body of a review.
SOURCE = "AdmissionReview"


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


@dataclass(frozen=True)
class _Kind:
    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    kind: str
    group: str | None = None


@dataclass(frozen=True)
class _Resource:
    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    resource: str


@dataclass(frozen=True)
class _Request:
    """``request`` of an AdmissionReview, as far as moorage reads it; other keys are ignored."""

    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    uid: str
    kind: _Kind
    resource: _Resource
    operation: str
    sub_resource: str | None = field(default=None, metadata=key("subResource"))
    namespace: str | None = None
    name: str | None = None
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = field(default=None, metadata=key("oldObject"))
    #: Taken as given: only ``true`` means a dry run, and a user name that is not a string
    #: is none.
    dry_run: Any = field(default=None, metadata=key("dryRun"))
    user_info: Any = field(default=None, metadata=key("userInfo"))


@dataclass(frozen=True)
class _Review:
    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    api_version: Literal["admission.k8s.io/v1"] = field(metadata=key("apiVersion"))
    kind: Literal["AdmissionReview"]
    request: _Request


def parse_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview v1 body; ``DocumentError`` says what is wrong, with
    the key at fault (answered with 400)."""
    request = read(_Review, parse_json(body, SOURCE), SOURCE).request
    info = request.user_info
    user = info.get("username") if isinstance(info, dict) else None
    return AdmissionRequest(
        uid=request.uid,
        kind=request.kind.kind,
        group=request.kind.group or "",
        resource=request.resource.resource,
        sub_resource=request.sub_resource or "",
        operation=request.operation,
        namespace=request.namespace or "",
        name=request.name or "",
        object=request.object or {},
        dry_run=request.dry_run is True,
        user=user if isinstance(user, str) else "",
        old_object=request.old_object or {},
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
