"""A throwaway Debian host root for tests that must really install packages.

:func:`host_root_tarball` builds ``mmdebstrap --variant=apt --include=python3,ca-certificates
bookworm`` (or another suite, e.g. trixie) once and keeps the tarball in a cache directory
(``$APTSHIP_TEST_CACHE``, else ``~/.cache/aptship-tests``), reused across test runs.
:func:`host_root` unpacks it into a fresh directory (on tmpfs when it can: see
:func:`_fast_base`) for one test and removes it afterwards; :func:`run_in_root` runs a
command there with ``chroot``.  Needs root (mmdebstrap's root mode, chroot) and no mounts: apt and
dpkg in the chroot warn about /dev/pts and /proc and go on.

The Debian mirror is the one this machine's apt already uses (read from
``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/``), or ``$APTSHIP_DEBIAN_MIRROR``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from publisher import buildroot

SUITE = "bookworm"
VARIANT = "apt"
INCLUDE = ("python3", "ca-certificates")
APT_DIR = Path("/etc/apt")
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def debian_mirror(suite: str = SUITE, apt_dir: Path = APT_DIR) -> str:
    """The URI this machine's apt uses for ``<suite> main`` (``$APTSHIP_DEBIAN_MIRROR`` wins):
    the product's own look-up (:func:`publisher.buildroot.debian_mirror`)."""
    return buildroot.debian_mirror(suite, apt_dir)


def mirror_line(suite: str = SUITE) -> str:
    return f"deb {debian_mirror(suite)} {suite} main"


def cache_dir() -> Path:
    configured = os.environ.get("APTSHIP_TEST_CACHE")
    path = Path(configured) if configured else Path.home() / ".cache" / "aptship-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def host_root_tarball(suite: str = SUITE) -> Path:
    """The cached host root tarball, built with mmdebstrap when missing (~25 s, ~215 MB)."""
    line = mirror_line(suite)
    recipe = {"suite": suite, "variant": VARIANT, "include": INCLUDE, "mirror": line}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    tarball = cache_dir() / f"hostroot-{suite}-{key}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap not found: apt-get install mmdebstrap")
    fd, partial_name = tempfile.mkstemp(prefix=f"{tarball.stem}.", suffix=".tar", dir=cache_dir())
    os.close(fd)
    partial = Path(partial_name)
    try:
        result = subprocess.run(
            [
                "mmdebstrap",
                "--mode=root",
                f"--variant={VARIANT}",
                f"--include={','.join(INCLUDE)}",
                "--format=tar",
                # Like the machine's own apt setup: mirrors may serve an older Release.
                "--aptopt=Acquire::Check-Valid-Until false",
                suite,
                str(partial),
                line,
            ],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"mmdebstrap failed ({result.returncode}) with {line!r}:\n{result.stderr[-4000:]}"
            )
        partial.chmod(0o644)
        os.replace(partial, tarball)
    finally:
        partial.unlink(missing_ok=True)
    return tarball


def _fast_base(tmp_path: Path) -> Path:
    """Where to unpack: /dev/shm when it is an exec-able tmpfs, else ``tmp_path``.

    Unpacking the ~9,600 files takes about 6 s on this machine's ext4 disk and 0.3 s
    on tmpfs.  ``$APTSHIP_HOSTROOT_DIR`` chooses the directory explicitly.
    """
    configured = os.environ.get("APTSHIP_HOSTROOT_DIR")
    if configured:
        return Path(configured)
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return tmp_path
    for mount in mounts:
        fields = mount.split()
        if (
            len(fields) >= 4
            and fields[1] == "/dev/shm"
            and fields[2] == "tmpfs"
            and "noexec" not in fields[3].split(",")
            and os.access("/dev/shm", os.W_OK)
        ):
            return Path("/dev/shm")
    return tmp_path


@contextmanager
def host_root(tmp_path: Path, suite: str = SUITE) -> Iterator[Path]:
    """Unpack the host root (of ``suite``) into a fresh directory; remove it afterwards.

    The directory is below /dev/shm when that is usable (see :func:`_fast_base`), else
    below ``tmp_path``.
    """
    tarball = host_root_tarball(suite)
    root = Path(tempfile.mkdtemp(prefix="aptship-hostroot-", dir=_fast_base(tmp_path)))
    try:
        subprocess.run(
            ["tar", "--extract", "--numeric-owner", "--file", str(tarball), "-C", str(root)],
            check=True,
            capture_output=True,
        )
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_in_root(
    root: Path,
    cmd: list[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside ``root`` with ``chroot`` and a clean environment (plus ``env``)."""
    return subprocess.run(
        ["chroot", str(root), *cmd],
        env={**ROOT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def in_root(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run a shell command inside ``root``; it must succeed."""
    result = run_in_root(root, ["sh", "-c", command])
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def installed_version(root: Path, package: str) -> str:
    """The version of ``package`` dpkg has installed in ``root``."""
    return in_root(root, f"dpkg-query -W -f='${{Version}}' {package}").stdout.strip()
