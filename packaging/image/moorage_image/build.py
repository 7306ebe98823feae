"""Build the moorage container image as an OCI image layout, reproducibly.

The steps, each from scratch on every build (only pip's downloaded wheels are kept between
builds, in the cache directory):

1. mmdebstrap installs Debian's Essential set, python3, ca-certificates and netbase into an
   empty directory (``rootfs.bootstrap``); the service user and its data directory are added;
2. moorage's wheel is built and installed with its pinned dependencies into /opt/moorage by
   the image's own interpreter (``rootfs.install_moorage``); all bytecode is recompiled
   deterministically; leftovers of the build are removed;
3. two layers are written (``layer``): Debian (everything but /opt/moorage) and moorage
   (/opt/moorage); then the config, the manifest, an SPDX SBOM of the installed packages and
   an artifact manifest that refers to the image (``subject``) carrying it (``layout``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moorage_image import rootfs as fs
from moorage_image import sbom
from moorage_image.inputs import Project, read_project
from moorage_image.layer import LAYER_MEDIA_TYPE, Layer, write_layer
from moorage_image.layout import (
    OCI_CONFIG,
    OCI_MANIFEST,
    REF_NAME,
    LayoutWriter,
    empty_descriptor,
)

#: The repository the image is published as; its tag is the project's version.
IMAGE_NAME = "moorage/moorage"
PORT = 5000
#: Directories that the container runtime fills: kept empty in the image.
RUNTIME_DIRECTORIES = ("dev", "proc", "sys", "run", "tmp")
SBOM_ARTIFACT_TYPE = sbom.MEDIA_TYPE


def sbom_ref_name(version: str) -> str:
    """The SBOM's name inside the layout (``oci:DIR:0.1.0.sbom``), so that tools that copy one
    manifest by name (skopeo) can push it; registries get it by digest, never as a tag."""
    return f"{version}.sbom"


Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BuiltImage:
    layout: Path
    tag: str
    digest: str
    sbom_digest: str
    layers: tuple[Layer, ...]
    seconds: float

    @property
    def reference(self) -> str:
        """The image as containers/image tools name it: ``oci:DIR:TAG``."""
        return f"oci:{self.layout}:{self.tag}"

    @property
    def sbom_reference(self) -> str:
        return f"oci:{self.layout}:{sbom_ref_name(self.tag)}"


def mounts_under(directory: Path) -> list[str]:
    """Mount points inside ``directory`` (an interrupted mmdebstrap may leave /proc or /sys
    mounted in the root filesystem: never delete through them)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    prefix = f"{directory}/"
    points = (line.split()[4].replace("\\040", " ") for line in lines if len(line.split()) > 4)
    return sorted(point for point in points if point.startswith(prefix))


def _base_layer(relative: str) -> str:
    if relative == fs.VENV.lstrip("/"):
        return "skip"
    if relative in RUNTIME_DIRECTORIES:
        return "entry"
    return "all"


def _venv_layer(relative: str) -> str:
    venv = fs.VENV.lstrip("/")
    if relative == venv or relative.startswith(f"{venv}/"):
        return "all"
    if venv.startswith(f"{relative}/"):
        return "through"
    return "skip"


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_labels(project: Project) -> dict[str, str]:
    """The org.opencontainers.image.* labels of the config (and annotations of the manifest)."""
    values = {
        "created": rfc3339(project.epoch),
        "version": project.version,
        "title": project.name,
        "description": project.description,
        "licenses": project.license,
        "revision": project.revision,
        "source": project.source_url,
    }
    return {f"org.opencontainers.image.{k}": v for k, v in values.items() if v}


def image_config(
    project: Project, architecture: str, layers: Sequence[Layer], labels: dict[str, str]
) -> dict[str, Any]:
    created = rfc3339(project.epoch)
    return {
        "created": created,
        "architecture": architecture,
        "os": "linux",
        "config": {
            "User": f"{fs.UID}:{fs.GID}",
            "Env": [
                f"PATH={fs.VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "PYTHONDONTWRITEBYTECODE=1",
                "PYTHONUNBUFFERED=1",
                # Settings rather than flags: every command (serve, gc, migrate...) finds the
                # data, and a runtime's or a Pod's own values replace them.
                f"MOORAGE_LISTEN=0.0.0.0:{PORT}",
                f"MOORAGE_DATA={fs.DATA}",
            ],
            "Entrypoint": ["moorage"],
            "Cmd": ["serve"],
            "WorkingDir": fs.DATA,
            "ExposedPorts": {f"{PORT}/tcp": {}},
            "Volumes": {fs.DATA: {}},
            "StopSignal": "SIGTERM",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {
                "created": created,
                "created_by": (
                    f"mmdebstrap --variant=essential --include={','.join(fs.PACKAGES)} {fs.SUITE}"
                ),
                "comment": f"Debian {fs.SUITE}; user {fs.USER} ({fs.UID}) owns {fs.DATA}",
            },
            {
                "created": created,
                "created_by": f"pip install {project.name}=={project.version} into {fs.VENV}",
                "comment": "pinned by constraints.txt; bytecode compiled (unchecked-hash)",
            },
        ],
    }


def build(
    project_root: Path,
    output: Path,
    *,
    work: Path,
    cache: Path,
    mirrors: Sequence[str] = fs.MIRRORS,
    python: str,
    keep_rootfs: bool = False,
    log: Log,
) -> BuiltImage:
    if os.geteuid() != 0:
        raise SystemExit("building the image needs root (mmdebstrap's root mode and chroot)")
    started = time.monotonic()
    os.umask(0o022)
    project = read_project(project_root)
    log(
        f"{IMAGE_NAME}:{project.version} at {project.revision or 'no git revision'}, "
        f"SOURCE_DATE_EPOCH={project.epoch} ({project.epoch_source})"
    )
    work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="build-", dir=work))
    try:
        rootfs = scratch / "rootfs"
        fs.bootstrap(rootfs, project.epoch, mirrors, log)
        fs.add_user(rootfs)
        fs.download_wheels(project, rootfs, cache / "wheels", project.epoch, python, log)
        fs.install_moorage(project, rootfs, cache / "wheels", project.epoch, log)
        fs.compile_bytecode(rootfs, project.epoch, log)
        architecture = fs.in_image(rootfs, project.epoch, "dpkg", "--print-architecture").strip()
        fs.clean(rootfs)

        log("writing the layers")
        layers: tuple[Layer, ...] = (
            write_layer(rootfs, _base_layer, project.epoch, scratch / "debian.tar.gz"),
            write_layer(rootfs, _venv_layer, project.epoch, scratch / "moorage.tar.gz"),
        )
        packages = [
            *sbom.read_dpkg_status(rootfs, fs.DISTRO),
            *sbom.read_site_packages(
                next((rootfs / fs.VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
            ),
        ]

        partial = output.with_name(f"{output.name}.partial")
        if partial.exists():
            shutil.rmtree(partial)
        writer = LayoutWriter(partial)
        layer_descriptors = [
            writer.add_file(LAYER_MEDIA_TYPE, layer.path, layer.digest, layer.size).json()
            for layer in layers
        ]
        blobs = output / "blobs" / "sha256"
        layers = tuple(
            dataclasses.replace(layer, path=blobs / layer.digest.removeprefix("sha256:"))
            for layer in layers
        )
        labels = image_labels(project)
        config = writer.add_json(OCI_CONFIG, image_config(project, architecture, layers, labels))
        manifest = writer.add_json(
            OCI_MANIFEST,
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.json(),
                "layers": layer_descriptors,
                "annotations": labels,
            },
        )
        document = sbom.spdx_document(
            image_name=IMAGE_NAME,
            version=project.version,
            manifest_digest=manifest.digest,
            created=project.epoch,
            packages=packages,
            creator="moorage packaging/image",
        )
        sbom_blob = writer.add_json(sbom.MEDIA_TYPE, document)
        sbom_manifest = writer.add_json(
            OCI_MANIFEST,
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": SBOM_ARTIFACT_TYPE,
                "config": empty_descriptor(),
                "layers": [
                    sbom_blob.json(
                        annotations={
                            "org.opencontainers.image.title": (
                                f"{project.name}-{project.version}.spdx.json"
                            )
                        }
                    )
                ],
                "subject": manifest.json(),
                "annotations": {"org.opencontainers.image.created": rfc3339(project.epoch)},
            },
        )
        writer.add_bytes(empty_descriptor()["mediaType"], b"{}")
        writer.finish(
            [
                manifest.json(
                    platform={"architecture": architecture, "os": "linux"},
                    annotations={REF_NAME: project.version},
                ),
                sbom_manifest.json(
                    artifactType=SBOM_ARTIFACT_TYPE,
                    annotations={REF_NAME: sbom_ref_name(project.version)},
                ),
            ]
        )
        if output.exists():
            shutil.rmtree(output)
        partial.rename(output)
    finally:
        mounted = mounts_under(scratch)
        if keep_rootfs or mounted:
            log(f"kept the root filesystem in {scratch / 'rootfs'}")
            if mounted:
                log(f"(something is still mounted in it: {', '.join(mounted)})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.monotonic() - started
    sizes = sum(layer.size for layer in layers)
    debs = sum(1 for package in packages if package.kind == "deb")
    log(
        f"{IMAGE_NAME}:{project.version} in {output}: {debs} Debian and "
        f"{len(packages) - debs} Python packages, {sizes / 1e6:.1f} MB compressed, "
        f"built in {seconds:.0f} s"
    )
    return BuiltImage(
        layout=output,
        tag=project.version,
        digest=manifest.digest,
        sbom_digest=sbom_manifest.digest,
        layers=layers,
        seconds=seconds,
    )
