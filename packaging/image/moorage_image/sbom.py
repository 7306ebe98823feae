"""An SPDX 2.3 (JSON) software bill of materials of the image's root filesystem.

It lists what is installed, read from the filesystem itself rather than from the build's
inputs: every Debian package dpkg records as installed (``/var/lib/dpkg/status``) and every
Python distribution of the virtual environment (its ``*.dist-info/METADATA``), each with its
version and a package URL (``pkg:deb/debian/...``, ``pkg:pypi/...``), all contained in one
package that stands for the image (its manifest digest as checksum).
"""

from __future__ import annotations

import email.parser
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

MEDIA_TYPE = "application/spdx+json"
NOASSERTION = "NOASSERTION"


@dataclass(frozen=True, slots=True)
class Package:
    kind: str  # "deb" or "pypi"
    name: str
    version: str
    purl: str
    #: As SPDX writes it ("Organization: Debian"); None when unknown.
    supplier: str | None = None
    license: str | None = None
    source: str | None = None


def read_dpkg_status(rootfs: Path, distro: str) -> list[Package]:
    """The installed Debian packages of ``rootfs`` (``distro`` as in a purl: ``debian-12``)."""
    text = (rootfs / "var/lib/dpkg/status").read_text(encoding="utf-8")
    packages = []
    for fields in _deb822(text):
        if fields.get("Status", "").split()[-1:] != ["installed"]:
            continue
        name, version, arch = fields["Package"], fields["Version"], fields["Architecture"]
        source = fields.get("Source", "").split(" ")[0] or None
        qualifiers = f"arch={arch}&distro={distro}"
        if source is not None and source != name:
            qualifiers += f"&upstream={quote(source, safe='')}"
        packages.append(
            Package(
                kind="deb",
                name=name,
                version=version,
                purl=f"pkg:deb/debian/{name}@{quote(version, safe='+~')}?{qualifiers}",
                supplier="Organization: Debian",
                source=source,
            )
        )
    return sorted(packages, key=lambda p: p.name)


def _deb822(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a deb822 file (dpkg status), with continuation lines joined."""
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields


def read_site_packages(site_packages: Path) -> list[Package]:
    """The Python distributions installed in ``site_packages``."""
    packages = []
    parser = email.parser.HeaderParser()
    for metadata in sorted(site_packages.glob("*.dist-info/METADATA")):
        headers = parser.parsestr(metadata.read_text(encoding="utf-8"))
        name, version = headers["Name"], headers["Version"]
        normalized = re.sub(r"[-_.]+", "-", name).lower()
        packages.append(
            Package(
                kind="pypi",
                name=name,
                version=version,
                purl=f"pkg:pypi/{normalized}@{quote(version, safe='+')}",
                license=headers.get("License-Expression"),
            )
        )
    return sorted(packages, key=lambda p: p.name.lower())


def _spdx_id(prefix: str, name: str, taken: set[str]) -> str:
    base = f"SPDXRef-{prefix}-" + re.sub(r"[^A-Za-z0-9.]+", "-", name)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def spdx_document(
    *,
    image_name: str,
    version: str,
    manifest_digest: str,
    created: int,
    packages: list[Package],
    creator: str,
) -> dict[str, Any]:
    """The SPDX 2.3 document: the image package, containing each of ``packages``."""
    algorithm, _, hex_digest = manifest_digest.partition(":")
    namespace_id = uuid.uuid5(uuid.NAMESPACE_URL, f"oci:{image_name}@{manifest_digest}")
    image_id = "SPDXRef-Image"
    taken = {image_id}
    spdx_packages: list[dict[str, Any]] = [
        {
            "SPDXID": image_id,
            "name": image_name,
            "versionInfo": version,
            "primaryPackagePurpose": "CONTAINER",
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "checksums": [{"algorithm": algorithm.upper(), "checksumValue": hex_digest}],
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": (
                        f"pkg:oci/{image_name.rsplit('/', 1)[-1]}@{quote(manifest_digest)}"
                        f"?tag={quote(version)}"
                    ),
                }
            ],
        }
    ]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]
    for package in packages:
        spdx_id = _spdx_id(package.kind, package.name, taken)
        entry: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": package.license or NOASSERTION,
            "copyrightText": NOASSERTION,
            "supplier": package.supplier or NOASSERTION,
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": package.purl,
                }
            ],
        }
        if package.source is not None and package.source != package.name:
            entry["sourceInfo"] = f"built from the Debian source package {package.source}"
        spdx_packages.append(entry)
        relationships.append(
            {
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": spdx_id,
            }
        )
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image_name}:{version}",
        "documentNamespace": (
            f"https://spdx.org/spdxdocs/{image_name.replace('/', '-')}-{version}-{namespace_id}"
        ),
        "creationInfo": {
            "created": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": [f"Tool: {creator}"],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    }
