"""``moorage certs --secret``: the webhooks' certificate kept in a Kubernetes Secret, and the
webhook configurations armed with its CA.

For a webhook installed in a cluster (the Helm chart runs this in a hook Job), the CA and the
serving certificate live in a Secret of type ``kubernetes.io/tls`` (``ca.crt``, ``tls.crt``,
``tls.key``, as cert-manager writes them), which the webhooks' pods mount:

- ``ensure_secret`` keeps the Secret while its certificate is for the same names, signed by
  its ``ca.crt`` and valid for a while yet (``RENEW_BEFORE``, or a third of its life when that
  is shorter), and otherwise issues a new CA and certificate (``moorage.certs.issue``) and
  writes them, so running it again changes nothing.
- ``wait_for_secret`` is for a Secret another issuer writes (cert-manager): it only waits for
  its ``ca.crt``.
- ``arm`` puts the CA into every webhook of a Mutating- or ValidatingWebhookConfiguration
  (``clientConfig.caBundle``), and sets its ``failurePolicy`` once the CA is in: the chart
  registers the webhooks failing open, so they never refuse requests because their caller
  cannot check a certificate yet. A CA the bundle holds already, and that is still valid,
  stays beside the new one, so webhooks still serving the previous certificate are trusted
  until they restart. A configuration that does not exist yet is left for a later run. The
  fields it writes are then left to no manager (``managedFields``), so that Helm's
  server-side apply of the configurations never conflicts with them.

The API server is the pod's own (its ServiceAccount token and CA), or the one the settings
``admission.kubernetes_api``, ``kubernetes_token_file`` and ``kubernetes_ca_file`` name
(``MOORAGE_ADMISSION_KUBERNETES_API`` ...), as for the webhooks' Kubernetes client.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import http.client
import ipaddress
import json
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from moorage.admission.kube import ClusterConfig
from moorage.certs import issue

#: A certificate is renewed once it expires within this time (or within a third of its
#: whole life, when that is shorter).
RENEW_BEFORE = datetime.timedelta(days=30)

SECRET_TYPE = "kubernetes.io/tls"
FIELD_MANAGER = "moorage-certs"

WebhookKind = Literal["mutating", "validating"]

_KIND_RESOURCES = {
    "mutating": "mutatingwebhookconfigurations",
    "validating": "validatingwebhookconfigurations",
}


class KubernetesApiError(RuntimeError):
    """The Kubernetes API could not be reached or refused a request."""


@dataclass(frozen=True)
class KubeApi:
    """Plain JSON requests to one API server with a bearer token (read for each request)."""

    config: ClusterConfig
    timeout: float = 10.0

    def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        """The JSON answer, or None for a 404; ``KubernetesApiError`` for other failures."""
        parts = urlsplit(self.config.server)
        context = ssl.create_default_context(
            cafile=None if self.config.ca_file is None else str(self.config.ca_file)
        )
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port or 443, context=context, timeout=self.timeout
        )
        if method in ("POST", "PUT", "PATCH"):  # who changed the fields, in managedFields
            path += ("&" if "?" in path else "?") + f"fieldManager={FIELD_MANAGER}"
        token = self.config.token_file.read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise KubernetesApiError(
                f"cannot reach the Kubernetes API at {self.config.server}: {exc}"
            ) from None
        finally:
            connection.close()
        if response.status == 404:
            return None
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {"message": raw.decode(errors="replace")}
        if response.status >= 400:
            message = document.get("message", "") if isinstance(document, dict) else ""
            raise KubernetesApiError(f"{method} {path}: {response.status} {message}".rstrip())
        return document


def _secret_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _decoded(secret: dict[str, Any], key: str) -> bytes | None:
    value = (secret.get("data") or {}).get(key)
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return dns, ips


def still_good(
    secret: dict[str, Any],
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    now: datetime.datetime,
) -> str | None:
    """None when the Secret's certificate can be kept; otherwise why it cannot."""
    ca_pem, cert_pem = _decoded(secret, "ca.crt"), _decoded(secret, "tls.crt")
    if ca_pem is None or cert_pem is None or _decoded(secret, "tls.key") is None:
        return "it lacks ca.crt, tls.crt or tls.key"
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "its certificate is not one signed by its ca.crt"
    dns, ips = _sans(cert)
    wanted_ips = {str(ipaddress.ip_address(a)) for a in ip_addresses}
    if dns != set(dns_names) or ips != wanted_ips:
        return "its certificate is for other names"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    if cert.not_valid_after_utc - now < min(RENEW_BEFORE, life / 3):
        return f"its certificate expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


@dataclass(frozen=True)
class Ensured:
    """The CA in force, and whether this run issued it (with the reason)."""

    ca_pem: bytes
    issued: bool
    reason: str = ""


def ensure_secret(
    api: KubeApi,
    namespace: str,
    name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    *,
    days: int,
    force: bool = False,
    labels: dict[str, str] | None = None,
) -> Ensured:
    """Keep Secret ``namespace/name`` if its certificate is still good, or write a new CA and
    certificate into it (creating it when absent)."""
    path = _secret_path(namespace, name)
    existing = api.request("GET", path)
    now = datetime.datetime.now(datetime.UTC)
    if existing is not None and existing.get("type") != SECRET_TYPE:
        raise KubernetesApiError(
            f"the Secret {namespace}/{name} exists with type {existing.get('type')}, not "
            f"{SECRET_TYPE}: delete it, or name another one"
        )
    if existing is None:
        reason = "there was none"
    elif force:
        reason = "--force"
    else:
        problem = still_good(existing, dns_names, ip_addresses, now)
        if problem is None:
            ca_pem = _decoded(existing, "ca.crt")
            assert ca_pem is not None
            return Ensured(ca_pem, issued=False)
        reason = problem
    with tempfile.TemporaryDirectory(prefix="moorage-certs-") as scratch:
        issued = issue(Path(scratch), list(dns_names), list(ip_addresses), days=days)
        files = {
            "ca.crt": issued.ca_cert.read_bytes(),
            "tls.crt": issued.cert.read_bytes(),
            "tls.key": issued.key.read_bytes(),
        }
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "type": SECRET_TYPE,
        "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
    }
    if existing is None:
        api.request("POST", _secret_path(namespace), secret)
    else:
        secret["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        api.request("PUT", path, secret)
    return Ensured(files["ca.crt"], issued=True, reason=reason)


def wait_for_secret(
    api: KubeApi,
    namespace: str,
    name: str,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """The ``ca.crt`` of a Secret another issuer writes, once it is there."""
    deadline = clock() + timeout
    while True:
        secret = api.request("GET", _secret_path(namespace, name))
        ca_pem = None if secret is None else _decoded(secret, "ca.crt")
        if ca_pem and _decoded(secret or {}, "tls.crt"):
            return ca_pem
        if clock() >= deadline:
            raise KubernetesApiError(
                f"the Secret {namespace}/{name} has no ca.crt and tls.crt after {timeout:g} s "
                "(is its issuer, cert-manager, running?)"
            )
        sleep(2.0)


def ca_bundle(new_ca: bytes, current: str | None, now: datetime.datetime) -> bytes:
    """``new_ca``, followed by the still valid certificates of the ``current`` caBundle
    (base64 of PEM) that differ from it."""
    try:
        new = x509.load_pem_x509_certificates(new_ca)
    except ValueError:
        return new_ca
    kept = list(new)
    if current:
        try:
            previous = x509.load_pem_x509_certificates(base64.b64decode(current))
        except (ValueError, binascii.Error):
            previous = []
        kept += [cert for cert in previous if cert not in kept and cert.not_valid_after_utc > now]
    return b"".join(cert.public_bytes(Encoding.PEM) for cert in kept)


def arm(
    api: KubeApi,
    kind: WebhookKind,
    name: str,
    ca_pem: bytes,
    failure_policy: str | None,
) -> bool:
    """Give every webhook of configuration ``name`` the CA (and ``failure_policy``, if not
    None). False when the configuration does not exist (yet)."""
    path = f"/apis/admissionregistration.k8s.io/v1/{_KIND_RESOURCES[kind]}/{quote(name, safe='')}"
    configuration = api.request("GET", path)
    if configuration is None:
        return False
    now = datetime.datetime.now(datetime.UTC)
    patch: list[dict[str, Any]] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        current = (webhook.get("clientConfig") or {}).get("caBundle")
        bundle = base64.b64encode(ca_bundle(ca_pem, current, now)).decode()
        patch += [
            # The list may have changed since it was read: patch only the webhook we saw.
            {"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]},
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle},
        ]
        if failure_policy is not None:
            patch.append(
                {"op": "add", "path": f"/webhooks/{index}/failurePolicy", "value": failure_policy}
            )
    if patch:
        patched = api.request("PATCH", path, patch, "application/json-patch+json")
        _disown(api, path, patched or {})
    return True


def _disown(api: KubeApi, path: str, configuration: dict[str, Any]) -> None:
    """Leave the fields just written to no manager (remove this command's entry from
    ``managedFields``). Helm applies the configurations server-side: a field another manager
    changed would be a conflict for Helm whenever it applies another value (an upgrade with
    another failurePolicy, a rollback to the first release, which rendered Ignore); a field
    nobody manages is not."""
    entries = configuration.get("metadata", {}).get("managedFields") or []
    ours = [i for i, entry in enumerate(entries) if entry.get("manager") == FIELD_MANAGER]
    patch: list[dict[str, Any]] = []
    for index in reversed(ours):
        where = f"/metadata/managedFields/{index}"
        patch += [
            {"op": "test", "path": f"{where}/manager", "value": FIELD_MANAGER},
            {"op": "remove", "path": where},
        ]
    if patch:
        api.request("PATCH", path, patch, "application/json-patch+json")
