"""Minimal CustomResourceDefinitions for the chart's objects of other projects' APIs.

The test control plane serves neither cert-manager (Issuer, Certificate: ``cert-manager.io/v1``)
nor the Prometheus operator (ServiceMonitor: ``monitoring.coreos.com/v1``). These definitions
declare the fields of those APIs' reference documentation that the chart could use, with their
types and allowed values, and nothing more open than a free-form leaf: a server-side dry run
with strict field validation then refuses a misspelt or misplaced field, or a wrong type, as
the real definitions would (they declare more fields, all optional here).
"""

from __future__ import annotations

from typing import Any

from tests.support.kube import Json

STRING: Json = {"type": "string"}
INTEGER: Json = {"type": "integer"}
BOOLEAN: Json = {"type": "boolean"}
STRINGS: Json = {"type": "array", "items": STRING}
STRING_MAP: Json = {"type": "object", "additionalProperties": STRING}
#: A part of the API the chart does not use: anything goes (nothing under it is checked).
OPEN: Json = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> Json:
    schema: Json = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def enum(*values: str) -> Json:
    return {"type": "string", "enum": list(values)}


def crd(group: str, kind: str, plural: str, spec: Json) -> Json:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": obj({"spec": spec, "status": OPEN}, ["spec"]),
                    },
                }
            ],
        },
    }


SECRET_KEY = obj({"name": STRING, "key": STRING, "optional": BOOLEAN}, ["key"])
ISSUER_REF = obj({"name": STRING, "kind": STRING, "group": STRING}, ["name"])

ISSUER = crd(
    "cert-manager.io",
    "Issuer",
    "issuers",
    obj(
        {
            "selfSigned": obj({"crlDistributionPoints": STRINGS}),
            "ca": obj(
                {
                    "secretName": STRING,
                    "crlDistributionPoints": STRINGS,
                    "ocspServers": STRINGS,
                    "issuingCertificateURLs": STRINGS,
                },
                ["secretName"],
            ),
            "acme": OPEN,
            "vault": OPEN,
            "venafi": OPEN,
        }
    ),
)

CERTIFICATE = crd(
    "cert-manager.io",
    "Certificate",
    "certificates",
    obj(
        {
            "secretName": STRING,
            "issuerRef": ISSUER_REF,
            "commonName": STRING,
            "dnsNames": STRINGS,
            "ipAddresses": STRINGS,
            "uris": STRINGS,
            "emailAddresses": STRINGS,
            "duration": STRING,
            "renewBefore": STRING,
            "isCA": BOOLEAN,
            "usages": {
                "type": "array",
                "items": enum(
                    "signing",
                    "digital signature",
                    "content commitment",
                    "key encipherment",
                    "key agreement",
                    "data encipherment",
                    "cert sign",
                    "crl sign",
                    "encipher only",
                    "decipher only",
                    "any",
                    "server auth",
                    "client auth",
                    "code signing",
                    "email protection",
                    "s/mime",
                    "ipsec end system",
                    "ipsec tunnel",
                    "ipsec user",
                    "timestamping",
                    "ocsp signing",
                    "microsoft sgc",
                    "netscape sgc",
                ),
            },
            "privateKey": obj(
                {
                    "algorithm": enum("RSA", "ECDSA", "Ed25519"),
                    "size": INTEGER,
                    "encoding": enum("PKCS1", "PKCS8"),
                    "rotationPolicy": enum("Never", "Always"),
                }
            ),
            "secretTemplate": obj({"annotations": STRING_MAP, "labels": STRING_MAP}),
            "subject": OPEN,
            "keystores": OPEN,
            "revisionHistoryLimit": INTEGER,
        },
        ["secretName", "issuerRef"],
    ),
)

TLS_CONFIG = obj(
    {
        "ca": obj({"secret": SECRET_KEY, "configMap": SECRET_KEY}),
        "cert": obj({"secret": SECRET_KEY, "configMap": SECRET_KEY}),
        "keySecret": SECRET_KEY,
        "serverName": STRING,
        "insecureSkipVerify": BOOLEAN,
        "caFile": STRING,
        "certFile": STRING,
        "keyFile": STRING,
    }
)

SERVICE_MONITOR = crd(
    "monitoring.coreos.com",
    "ServiceMonitor",
    "servicemonitors",
    obj(
        {
            "selector": obj(
                {
                    "matchLabels": STRING_MAP,
                    "matchExpressions": {"type": "array", "items": OPEN},
                }
            ),
            "namespaceSelector": obj({"any": BOOLEAN, "matchNames": STRINGS}),
            "jobLabel": STRING,
            "targetLabels": STRINGS,
            "podTargetLabels": STRINGS,
            "sampleLimit": INTEGER,
            "endpoints": {
                "type": "array",
                "items": obj(
                    {
                        "port": STRING,
                        "targetPort": {"x-kubernetes-int-or-string": True},
                        "path": STRING,
                        "scheme": enum("http", "https", "HTTP", "HTTPS"),
                        "params": OPEN,
                        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$"},
                        "scrapeTimeout": STRING,
                        "tlsConfig": TLS_CONFIG,
                        "bearerTokenSecret": SECRET_KEY,
                        "authorization": OPEN,
                        "basicAuth": OPEN,
                        "honorLabels": BOOLEAN,
                        "honorTimestamps": BOOLEAN,
                        "metricRelabelings": {"type": "array", "items": OPEN},
                        "relabelings": {"type": "array", "items": OPEN},
                        "followRedirects": BOOLEAN,
                        "enableHttp2": BOOLEAN,
                    }
                ),
            },
        },
        ["selector"],
    ),
)

DEFINITIONS = (ISSUER, CERTIFICATE, SERVICE_MONITOR)
