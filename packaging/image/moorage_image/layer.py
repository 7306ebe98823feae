"""Deterministic image layers: a directory tree as a gzip'd tar whose bytes depend only on the
tree's content and a date.

What makes two tars of equal trees differ, and what this module does about it:

- order: entries are written depth-first with each directory's names sorted by their bytes,
  a directory before its contents;
- times: a member's mtime is clamped to ``epoch`` (files older keep theirs, as the .debs set
  them); no atime or ctime is written (no pax time records: mtimes are whole seconds);
- owners: numeric uid and gid are kept (root, shadow, the service user), the user and group
  names are left empty, so the build machine's /etc/passwd does not leak in;
- hard links: the first path of an inode (in that order) holds the data, later ones link to it;
- gzip: no file name, mtime 0, a fixed level; the compressed bytes still depend on the zlib the
  build runs with, the uncompressed ones (the layer's diff_id) on nothing else.

Extended attributes are not written (no file of the image needs one). Sockets are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

GZIP_LEVEL = 6
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"

#: Decides, for a path relative to the root ("usr/bin", no leading slash), whether to write it
#: and whether to descend into it: ``"all"`` (both), ``"entry"`` (the directory without its
#: contents), ``"through"`` (its selected contents without it) or ``"skip"`` (neither).
Select = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Layer:
    """A written layer: its file, the digest of those (gzip'd) bytes, and of the tar inside."""

    path: Path
    digest: str
    size: int
    diff_id: str
    entries: int


def walk(root: Path, select: Select) -> Iterator[str]:
    """Relative paths under ``root`` in layer order: depth-first, names sorted by bytes."""

    def visit(relative: str) -> Iterator[str]:
        directory = root / relative if relative else root
        names = sorted(os.listdir(directory), key=os.fsencode)
        for name in names:
            path = f"{relative}/{name}" if relative else name
            choice = select(path)
            if choice == "skip":
                continue
            if choice != "through":
                yield path
            if choice in ("all", "through") and stat.S_ISDIR(os.lstat(root / path).st_mode):
                yield from visit(path)

    yield from visit("")


class _Digesting:
    """A write-only file that hashes and counts what goes through it to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()


class _TarSink(io.RawIOBase):
    """What the tar stream writes to: hashed (the diff_id), then gzip'd into a digested file."""

    def __init__(self, compressed: _Digesting) -> None:
        super().__init__()
        self.sha256 = hashlib.sha256()
        self.gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0
        )

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        chunk = bytes(data)
        self.sha256.update(chunk)
        self.gzip.write(chunk)
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self.gzip.close()
        super().close()


def member(
    root: Path, relative: str, epoch: int, links: dict[tuple[int, int], str]
) -> tuple[tarfile.TarInfo, Path | None]:
    """The tar header of ``root/relative`` and the file whose bytes follow it (if any)."""
    path = root / relative
    st = os.lstat(path)
    info = tarfile.TarInfo(relative)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = min(int(st.st_mtime), epoch)
    data: Path | None = None
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        inode = (st.st_dev, st.st_ino)
        first = links.get(inode) if st.st_nlink > 1 else None
        if first is not None:
            info.type = tarfile.LNKTYPE
            info.linkname = first
        else:
            if st.st_nlink > 1:
                links[inode] = relative
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            data = path
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        raise ValueError(f"{path}: cannot be put in a layer (mode {st.st_mode:o})")
    return info, data


def write_layer(root: Path, select: Select, epoch: int, output: Path) -> Layer:
    """Write the selected part of ``root`` as a gzip'd tar layer to ``output``."""
    links: dict[tuple[int, int], str] = {}
    entries = 0
    with output.open("wb") as raw:
        compressed = _Digesting(raw)
        sink = _TarSink(compressed)
        buffered = io.BufferedWriter(sink, buffer_size=1 << 20)
        with tarfile.open(
            fileobj=buffered, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8"
        ) as tar:
            for relative in walk(root, select):
                info, data = member(root, relative, epoch, links)
                if data is None:
                    tar.addfile(info)
                else:
                    with data.open("rb") as content:
                        tar.addfile(info, content)
                entries += 1
        buffered.close()  # flushes, and closes the gzip stream
    return Layer(
        path=output,
        digest=f"sha256:{compressed.sha256.hexdigest()}",
        size=compressed.size,
        diff_id=f"sha256:{sink.sha256.hexdigest()}",
        entries=entries,
    )
