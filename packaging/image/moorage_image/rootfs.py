"""The image's root filesystem: Debian's essential packages and python3 (mmdebstrap), the service
user, and moorage with its pinned dependencies in a virtual environment at /opt/moorage.

Every step that runs code from the image runs it with the image's own interpreter, through
``chroot``, with a clean environment (``PYTHONHASHSEED=0`` so that compiled frozensets keep
their order). Needs root: mmdebstrap's root mode and chroot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from moorage_image.inputs import Project

SUITE = "bookworm"
#: The distribution as package URLs name it (``pkg:deb/debian/...?distro=debian-12``).
DISTRO = "debian-12"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
#: Besides the Essential set: the interpreter and its standard library (sqlite3, ssl), CA
#: certificates for S3 endpoints and remote registries, /etc/services and /etc/protocols,
#: and the marker that /usr is merged (without it apt picks usrmerge, which brings perl).
PACKAGES = ("python3", "ca-certificates", "netbase", "usr-is-merged")
#: Documentation, manual pages and translations are not installed (copyright files are).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)

VENV = "/opt/moorage"
DATA = "/var/lib/moorage"
USER = "moorage"
UID = GID = 65532
#: The installers used inside the image, pinned: pip, and setuptools to build moorage's wheel.
BUILD_TOOLS = ("pip==26.3", "setuptools==84.2.1")

Log = Callable[[str], None]


def run(command: Sequence[str | Path], *, env: dict[str, str] | None = None) -> str:
    """Run a command; its output goes in the exception when it fails."""
    argv = [str(part) for part in command]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, umask=0o022)
    if result.returncode != 0:
        raise RuntimeError(
            f"exit status {result.returncode}: {' '.join(argv)}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def in_image(rootfs: Path, epoch: int, *command: str) -> str:
    """Run ``command`` inside the root filesystem, with a clean, fixed environment."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "SOURCE_DATE_EPOCH": str(epoch),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
    }
    return run([shutil.which("chroot") or "/usr/sbin/chroot", rootfs, *command], env=env)


def bootstrap(rootfs: Path, epoch: int, mirrors: Sequence[str], log: Log) -> None:
    """Install the Essential set and ``PACKAGES`` into the empty directory ``rootfs``."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise SystemExit(
            "mmdebstrap is not installed: run scripts/install-clients.sh as root "
            "(or: apt-get install mmdebstrap)"
        )
    command = [
        mmdebstrap,
        "--mode=root",
        "--variant=essential",
        "--format=directory",
        f"--include={','.join(PACKAGES)}",
        "--aptopt=APT::Install-Recommends false",
        "--aptopt=Acquire::Languages none",
        *(f"--dpkgopt={option}" for option in DPKG_EXCLUDES),
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        # mmdebstrap copies the build machine's; the container runtime provides both.
        '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
        SUITE,
        str(rootfs),
        *mirrors,
    ]
    log(f"mmdebstrap {SUITE}: essential + {' '.join(PACKAGES)}")
    run(command, env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})


def add_user(rootfs: Path) -> None:
    """The service user and its data directory (its home)."""
    etc = rootfs / "etc"
    with (etc / "passwd").open("a") as passwd:
        passwd.write(f"{USER}:x:{UID}:{GID}:moorage registry:{DATA}:/usr/sbin/nologin\n")
    with (etc / "group").open("a") as group:
        group.write(f"{USER}:x:{GID}:\n")
    with (etc / "shadow").open("a") as shadow:
        shadow.write(f"{USER}:!:::::::\n")
    with (etc / "gshadow").open("a") as gshadow:
        gshadow.write(f"{USER}:!::\n")
    data = rootfs / DATA.lstrip("/")
    data.mkdir(mode=0o750)
    os.chown(data, UID, GID)
    data.chmod(0o750)


def interpreter(rootfs: Path, epoch: int) -> tuple[str, str, list[str]]:
    """The image's Python as pip's download options name it: version, ABI, and the platform
    tags its glibc accepts (pip does not expand ``manylinux_2_36`` to older ones itself)."""
    out = in_image(
        rootfs,
        epoch,
        "python3",
        "-c",
        "import os, sys, sysconfig; "
        "print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
        "print(f'cp{sys.version_info[0]}{sys.version_info[1]}'); "
        "print(os.confstr('CS_GNU_LIBC_VERSION').split()[1].replace('.', '_')); "
        "print(sysconfig.get_platform().split('-')[-1])",
    )
    version, abi, glibc, machine = out.split()
    major, minor = (int(part) for part in glibc.split("_"))
    platforms = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms += [f"{name}_{machine}" for m, name in legacy.items() if m <= minor]
    return version, abi, platforms


def download_wheels(
    project: Project, rootfs: Path, wheelhouse: Path, epoch: int, python: str, log: Log
) -> None:
    """Download (or find already downloaded) the wheels of the runtime dependencies, for the
    image's interpreter, with the build machine's pip and its index settings."""
    version, abi, platforms = interpreter(rootfs, epoch)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    log(f"pip download for CPython {version} ({abi}, {platforms[0]}) into {wheelhouse}")
    run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            wheelhouse,
            "--only-binary=:all:",
            *(option for platform in platforms for option in ("--platform", platform)),
            "--python-version",
            version,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--constraint",
            project.root / "constraints.txt",
            *project.dependencies,
            *BUILD_TOOLS,
        ]
    )


def install_moorage(project: Project, rootfs: Path, wheelhouse: Path, epoch: int, log: Log) -> None:
    """Build moorage's wheel and install it, with its dependencies, into ``VENV``; pip and
    setuptools stay in a throwaway build environment, outside the image."""
    build = rootfs / "tmp" / "build"
    shutil.copytree(wheelhouse, build / "wheels")
    shutil.copy2(project.root / "constraints.txt", build / "constraints.txt")
    for relative in project.source_files():
        target = build / "src" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project.root / relative, target)
    pip_wheel = next((build / "wheels").glob(f"pip-{BUILD_TOOLS[0].split('==')[1]}-*.whl"), None)
    if pip_wheel is None:
        raise RuntimeError(f"{BUILD_TOOLS[0]} is missing from {wheelhouse}")
    offline = ["--no-index", "--find-links", "/tmp/build/wheels"]
    log("installing pip and setuptools into a build environment inside the image")
    in_image(rootfs, epoch, "python3", "-m", "venv", "--without-pip", "/tmp/build/venv")
    in_image(
        rootfs,
        epoch,
        "/tmp/build/venv/bin/python",
        f"/tmp/build/wheels/{pip_wheel.name}/pip",
        "install",
        "--quiet",
        *offline,
        *BUILD_TOOLS,
    )
    log(f"building the moorage {project.version} wheel")
    in_image(
        rootfs,
        epoch,
        "/tmp/build/venv/bin/python",
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        *offline,
        "--wheel-dir",
        "/tmp/build/local",
        "/tmp/build/src",
    )
    log(f"installing moorage=={project.version} and its dependencies into {VENV}")
    in_image(rootfs, epoch, "python3", "-m", "venv", "--without-pip", VENV)
    in_image(
        rootfs,
        epoch,
        "/tmp/build/venv/bin/python",
        "-m",
        "pip",
        "--python",
        f"{VENV}/bin/python",
        "install",
        "--quiet",
        "--no-compile",
        "--only-binary=:all:",
        *offline,
        "--find-links",
        "/tmp/build/local",
        "--constraint",
        "/tmp/build/constraints.txt",
        f"{project.name}=={project.version}",
    )
    shutil.rmtree(build)


def compile_bytecode(rootfs: Path, epoch: int, log: Log) -> None:
    """Replace every ``.pyc`` by one compiled here with a fixed hash seed, in unchecked-hash
    mode: Python loads it without comparing it with its source (neither the mtime, which the
    layer clamps, nor the hash), which is right for a read-only image. Without them each
    worker would compile every module it imports, at every start."""
    candidates = [*sorted((rootfs / "usr/lib").glob("python3*")), rootfs / "usr/share/python3"]
    roots = [f"/{path.relative_to(rootfs)}" for path in candidates if path.is_dir()]
    roots.append(VENV)
    for top in roots:
        for cache in sorted((rootfs / top.lstrip("/")).rglob("__pycache__")):
            shutil.rmtree(cache)
    log("compiling bytecode (unchecked-hash)")
    in_image(
        rootfs,
        epoch,
        "python3",
        "-m",
        "compileall",
        "-q",
        "-f",
        "--invalidation-mode",
        "unchecked-hash",
        *roots,
    )


#: Directories the build fills that stay in the image, empty.
EMPTIED = ("tmp", "run")
#: Left by the build, by package scripts, and by apt working from outside (apt itself is not
#: installed): removed.
REMOVED = (
    "root/.cache",
    "var/cache/ldconfig/aux-cache",
    "var/cache/apt",
    "var/lib/apt",
    "var/log/apt",
    "usr/share/info/dir",
)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean(rootfs: Path) -> None:
    for relative in EMPTIED:
        for child in (rootfs / relative).iterdir():
            _remove(child)
    for relative in REMOVED:
        _remove(rootfs / relative)
    for old in [*rootfs.glob("var/lib/dpkg/*-old"), *rootfs.glob("var/cache/debconf/*-old")]:
        old.unlink()
