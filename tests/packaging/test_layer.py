"""The layer writer: equal trees give equal bytes, whatever the build machine did to them."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from moorage_image.layer import write_layer
from moorage_image.layout import LayoutWriter, ReadLayout, canonical_json
from moorage_image.sbom import read_dpkg_status, read_site_packages

EPOCH = 1_700_000_000


def everything(relative: str) -> str:
    return "all"


def make_tree(root: Path, *, reverse: bool, mtime: int) -> None:
    """The same files, links and directories, created in one order or the other."""
    files = {
        "usr/bin/tool": b"#!/bin/sh\necho tool\n",
        "usr/lib/data.bin": b"\x00\x01" * 3000,
        "etc/config": b"key = value\n",
        "etc/zz-late": b"late\n",
        "a-b": b"dash sorts before slash\n",
    }
    for name in sorted(files, reverse=reverse):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/bin/alias").symlink_to("tool")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-hardlink")
    (root / "var/empty").mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def test_equal_trees_make_identical_layers(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_tree(first, reverse=False, mtime=EPOCH + 86_400)
    make_tree(second, reverse=True, mtime=EPOCH + 7 * 86_400)

    a = write_layer(first, everything, EPOCH, tmp_path / "a.tar.gz")
    b = write_layer(second, everything, EPOCH, tmp_path / "b.tar.gz")

    assert a.diff_id == b.diff_id
    assert a.digest == b.digest
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert a.size == (tmp_path / "a.tar.gz").stat().st_size


def test_members_are_sorted_clamped_anonymous_and_hard_linked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, reverse=True, mtime=EPOCH + 3600)
    old = root / "etc" / "config"
    os.utime(old, (EPOCH - 10, EPOCH - 10))
    layer = write_layer(root, everything, EPOCH, tmp_path / "layer.tar.gz")

    with tarfile.open(layer.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "a-b",
        "etc",
        "etc/config",
        "etc/zz-late",
        "usr",
        "usr/bin",
        "usr/bin/alias",
        "usr/bin/tool",
        "usr/bin/tool-hardlink",
        "usr/lib",
        "usr/lib/data.bin",
        "var",
        "var/empty",
    ]
    by_name = {m.name: m for m in members}
    # Newer than the epoch: clamped; older: kept as it was.
    assert by_name["etc/config"].mtime == EPOCH - 10
    assert {m.mtime for m in members if m.name != "etc/config"} == {EPOCH}
    # Numeric owners kept, names never written; no time records in pax headers.
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    assert {(m.uid, m.gid) for m in members} == {(os.getuid(), os.getgid())}
    assert all(not set(m.pax_headers) & {"atime", "ctime", "mtime"} for m in members)
    assert by_name["usr/bin/alias"].issym() and by_name["usr/bin/alias"].linkname == "tool"
    assert by_name["usr/bin/tool"].isreg() and by_name["usr/bin/tool"].mode == 0o755
    link = by_name["usr/bin/tool-hardlink"]
    assert link.islnk() and link.linkname == "usr/bin/tool" and link.size == 0


def test_gzip_header_has_no_name_and_no_time(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, reverse=False, mtime=EPOCH)
    layer = write_layer(root, everything, EPOCH, tmp_path / "named-layer.tar.gz")
    header = layer.path.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] == 0, "no FNAME (nor any other optional field)"
    assert header[4:8] == b"\x00\x00\x00\x00", "mtime 0"
    with gzip.open(layer.path) as unzipped:
        assert unzipped.read(512)[:3] == b"a-b"


def test_selection_keeps_a_directory_without_its_contents_or_descends_through_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    make_tree(root, reverse=False, mtime=EPOCH)

    def base(relative: str) -> str:
        if relative == "usr/lib":
            return "skip"
        return "entry" if relative == "etc" else "all"

    def only_lib(relative: str) -> str:
        if relative == "usr":
            return "through"
        return "all" if relative.startswith("usr/lib") else "skip"

    with tarfile.open(write_layer(root, base, EPOCH, tmp_path / "base.tar.gz").path) as tar:
        base_names = tar.getnames()
    with tarfile.open(write_layer(root, only_lib, EPOCH, tmp_path / "lib.tar.gz").path) as tar:
        lib_names = tar.getnames()
    assert "etc" in base_names and not any(n.startswith("etc/") for n in base_names)
    assert not any(n.startswith("usr/lib") for n in base_names)
    assert lib_names == ["usr/lib", "usr/lib/data.bin"]


def test_layout_json_is_canonical_and_blobs_match_their_digests(tmp_path: Path) -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, "é"], "c": None}}) == (
        '{"a":{"c":null,"d":[1,"é"]},"b":1}'.encode()
    )
    writer = LayoutWriter(tmp_path / "layout")
    blob = writer.add_json("application/json", {"z": 1, "a": 2})
    writer.finish([blob.json(annotations={"org.opencontainers.image.ref.name": "v1"})])
    layout = ReadLayout(tmp_path / "layout")
    assert (tmp_path / "layout" / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    assert layout.tagged("v1")["digest"] == blob.digest
    assert layout.json_blob(blob.digest) == {"z": 1, "a": 2}


def test_sbom_reads_dpkg_status_and_dist_info(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: libssl3\n"
        "Status: install ok installed\n"
        "Architecture: amd64\n"
        "Source: openssl\n"
        "Version: 3.0.16-1~deb12u1\n"
        "Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>\n"
        "Description: Secure Sockets Layer toolkit\n"
        " continuation line\n"
        "\n"
        "Package: removed-one\n"
        "Status: deinstall ok config-files\n"
        "Architecture: amd64\n"
        "Version: 1.0\n"
        "\n"
        "Package: sed\n"
        "Status: install ok installed\n"
        "Architecture: amd64\n"
        "Version: 1:4.9-1\n"
    )
    debs = read_dpkg_status(tmp_path, "debian-12")
    assert [(p.name, p.version) for p in debs] == [
        ("libssl3", "3.0.16-1~deb12u1"),
        ("sed", "1:4.9-1"),
    ]
    assert debs[0].purl == (
        "pkg:deb/debian/libssl3@3.0.16-1~deb12u1?arch=amd64&distro=debian-12&upstream=openssl"
    )
    assert debs[1].purl == "pkg:deb/debian/sed@1%3A4.9-1?arch=amd64&distro=debian-12"

    site = tmp_path / "site-packages"
    (site / "Typing_Extensions-4.16.0.dist-info").mkdir(parents=True)
    (site / "Typing_Extensions-4.16.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.4\nName: typing_extensions\nVersion: 4.16.0\n"
        "License-Expression: PSF-2.0\n\nlong description\n"
    )
    (site / "aiohttp-3.14.5.dist-info").mkdir()
    (site / "aiohttp-3.14.5.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: aiohttp\nVersion: 3.14.5\nLicense: Apache 2\n"
    )
    wheels = read_site_packages(site)
    assert [(p.name, p.version, p.purl, p.license) for p in wheels] == [
        ("aiohttp", "3.14.5", "pkg:pypi/aiohttp@3.14.5", None),
        ("typing_extensions", "4.16.0", "pkg:pypi/typing-extensions@4.16.0", "PSF-2.0"),
    ]
