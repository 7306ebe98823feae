"""``python packaging/image/build.py``: build the image; the digest is the last line printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moorage_image.build import IMAGE_NAME, build
from moorage_image.rootfs import MIRRORS

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="packaging/image/build.py",
        description=(
            f"Build the {IMAGE_NAME} image from Debian packages and the pinned Python "
            "dependencies into an OCI image layout, and print its manifest digest. "
            "Needs root and mmdebstrap. The image's date is SOURCE_DATE_EPOCH, else the "
            "commit time of HEAD."
        ),
    )
    parser.add_argument(
        "--output", type=Path, default=PROJECT_ROOT / "dist" / "image", help="the OCI layout"
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=PROJECT_ROOT,
        help="the checkout to build (default: this one)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=PROJECT_ROOT / "build" / "image",
        help="where the root filesystem is assembled (removed afterwards)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=PROJECT_ROOT / "build" / "image-cache",
        help="downloads kept between builds (pip wheels)",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="SOURCES_LINE",
        help=f"an apt sources line, repeatable (default: {'; '.join(MIRRORS)})",
    )
    parser.add_argument(
        "--keep-rootfs", action="store_true", help="keep the root filesystem to look at"
    )
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[image] {message}", file=sys.stderr, flush=True)

    try:
        built = build(
            args.project.resolve(),
            args.output.resolve(),
            work=args.work.resolve(),
            cache=args.cache.resolve(),
            mirrors=tuple(args.mirror or MIRRORS),
            python=sys.executable,
            keep_rootfs=args.keep_rootfs,
            log=log,
        )
    except RuntimeError as exc:  # a step's command failed: its output is in the message
        log(f"failed: {exc}")
        return 1
    log(f"image: {built.reference}")
    log(f"sbom:  {built.sbom_reference} (push it by digest: REPOSITORY@{built.sbom_digest})")
    print(built.digest)
    return 0
